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


def _finetune_rows(seeds=(1, 2)):
    rows = []
    for seed in seeds:
        rows += [{"seed": seed, "step": s, "epoch": s / 4, "split": "train", "loss": 1.1 - s / 20 - seed / 100,
                  "lr": 1e-5 * s, "skipped_steps": 0} for s in range(1, 9)]
        rows += [{"seed": seed, "step": s, "epoch": s / 4, "split": "dev", "accuracy": 0.5 + s / 40 - seed / 50,
                  "macro_f1": 0.4, "n": 3} for s in (4, 8)]
        rows += [{"seed": seed, "step": 8, "split": split, "final": True, "accuracy": 0.7, "n": 3}
                 for split in ("dev", "test")]
    return rows


def test_plot_draws_a_finetune_run(tmp_path):
    """Training loss and the dev metric (summary.json's) per seed, best dev marked, the learning rate."""
    pytest.importorskip("matplotlib")
    from bertforge.cli import main
    from bertforge.training.plot import finetune_figure

    rows = _finetune_rows()
    summary = {"task": "classify", "metric": "accuracy", "test": {"accuracy": {"mean": 0.7, "std": 0.0}}}
    fig = finetune_figure(rows, summary, tmp_path / "metrics.jsonl")
    loss, dev, lr = fig.axes
    assert (loss.get_title(), dev.get_title(), lr.get_title()) == ("training loss", "dev accuracy (best: *)",
                                                                  "learning rate")
    assert [line.get_label() for line in loss.get_lines()] == ["seed 1", "seed 2"]
    assert [list(line.get_xdata()) for line in loss.get_lines()] == [list(range(1, 9))] * 2
    curves = [line for line in dev.get_lines() if line.get_label().startswith("seed")]  # no final record
    assert [list(c.get_ydata()) for c in curves] == [pytest.approx([0.58, 0.68]), pytest.approx([0.56, 0.66])]
    stars = [line for line in dev.get_lines() if line.get_marker() == "*"]
    assert [(list(s.get_xdata()), list(s.get_ydata())) for s in stars] == [([8], pytest.approx([0.68])),
                                                                           ([8], pytest.approx([0.66]))]
    assert "test accuracy 0.7000 ± 0.0000 over 2 seed(s)" in fig._suptitle.get_text()
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert main(["plot", str(tmp_path)]) == 0
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_refuses_what_it_cannot_draw(tmp_path, capsys):
    """An unfinished finetune run with no dev evaluation (no metric to name), and one with no training record."""
    pytest.importorskip("matplotlib")
    from bertforge.cli import main

    rows = [r for r in _finetune_rows((1,)) if r["split"] == "train"]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no dev metric to plot" in err and "metrics.jsonl" in err
    (tmp_path / "metrics.jsonl").write_text("")
    (tmp_path / "summary.json").write_text(json.dumps({"task": "ner", "metric": "f1"}))
    assert main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "finetune` run with no training records" in err
    assert not (tmp_path / "curves.png").exists()
