"""Progress in a log file: plain complete lines (no carriage returns), with step, values, rate and ETA."""
import io
import os
import subprocess
import sys
from pathlib import Path

from bertforge.progress import LineProgress, NullProgress, progress

ROOT = Path(__file__).resolve().parents[2]


def test_line_progress_writes_complete_lines():
    out = io.StringIO()
    bar = LineProgress(10, "pretrain", unit="step", every_s=0.0, stream=out)
    bar.set_postfix(loss=6.1234567, tok_s="8300")
    bar.update(4)
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 2
    assert lines[0].startswith("pretrain: 4/10 (40%) | loss=6.123 | tok_s=8300 | ") and "ETA" in lines[0]
    assert lines[1].startswith("pretrain: 4/10 (40%)")


def test_not_a_terminal_gives_lines(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(progress(5, "x").bar, LineProgress) and isinstance(progress(5, "x", enabled=False), NullProgress)
    assert isinstance(progress(5, "x", bar=False).bar, LineProgress)


def test_pretrain_logs_progress_lines_into_a_file(tmp_path):
    """stderr redirected to a file, --no-progress: the run still reports where it is, line by line."""
    log = tmp_path / "stderr.log"
    env = dict(os.environ, DS_ACCELERATOR="cpu", PYTHONPATH=str(ROOT))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, "-m", "bertforge.cli", "pretrain", "--synthetic-vocab", "128",
                               "--model", "hidden_size=32", "--model", "num_attention_heads=2", "--model",
                               "intermediate_size=64", "--max-seq-length", "32", "--micro-batch", "2",
                               "--global-batch", "2", "--steps", "3", "--eval-samples", "2", "--no-export-hf",
                               "--output-dir", str(tmp_path / "run")], stderr=fh, stdout=subprocess.PIPE,
                              cwd=ROOT, env=env, timeout=300)
    text = log.read_text()
    assert proc.returncode == 0, text[-2000:]
    assert "\r" not in text
    assert any(line.startswith("pretrain: 3/3 (100%) | loss=") for line in text.splitlines()), text[-2000:]


def test_prepare_and_finetuning_report_through_the_shared_lines(monkeypatch, tmp_path):
    """prepare (bytes, scaled, with the shard count) and finetuning's progress write the same plain lines."""
    from bertforge.data.prepare import prepare
    from bertforge.data.tokenizer import train_wordpiece

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    src = tmp_path / "c.txt"
    src.write_text("\n\n".join(f"Document {i} is here. It has two sentences." for i in range(400)))
    train_wordpiece([src], tmp_path / "tok", vocab_size=120, show_progress=False)
    prepare([src], tmp_path / "tok", tmp_path / "data", shard_bytes=4000)
    steps = progress(10, "classify seed 1", unit="step", every_s=0.0)
    steps.update(3, loss=0.693147)
    steps.close()
    lines = err.getvalue().splitlines()
    assert "\r" not in err.getvalue()
    assert lines[0].startswith("prepare: 17.9k/17.9k (100%) | shards=5 | ") and " B/s | elapsed " in lines[0], lines
    assert lines[-1].startswith("classify seed 1: 3/10 (30%) | loss=0.6931 | ") and "ETA" in lines[-1], lines
