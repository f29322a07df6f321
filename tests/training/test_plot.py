"""`bertforge plot RUN_DIR` renders metrics.jsonl to a PNG."""
from __future__ import annotations

import json

import pytest


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    from bertforge.cli import main

    rows = [{"step": s, "split": "train", "loss": 9 - s / 10, "mlm_loss": 8 - s / 10, "nsp_loss": 0.7,
             "mlm_acc": s / 100, "nsp_acc": 0.5, "lr": 1e-3, "tokens_per_s": 1000.0} for s in range(1, 11)]
    rows.append({"step": 10, "split": "eval", "loss": 8.0, "mlm_acc": 0.1, "nsp_acc": 0.6, "mlm_unigram_acc": 0.05})
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert main(["plot", str(tmp_path), "-o", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", str(tmp_path / "nope")]) == 2  # one-line error: no metrics
