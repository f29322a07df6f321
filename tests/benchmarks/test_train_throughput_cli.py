"""The throughput benchmark runs end to end on CPU with the tiny shape (run as a script: tests never import
benchmarks) and writes a well-formed JSON. No speed is asserted here; speed lives in benchmarks/RESULTS.md."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_train_throughput_tiny_cpu(tmp_path):
    out = tmp_path / "tt.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--shapes", "tiny-64",
                           "--variants", "hf,ours,ours-padded", "--steps", "2", "--warmup", "1", "--batch", "4",
                           "--vocab", "2048", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert {r["variant"] for r in result["rows"]} == {"hf", "ours", "ours-padded"}
    for row in result["rows"]:
        assert "error" not in row, row
        assert row["seq_per_s"] > 0 and 0 < row["mfu"] < 1.5
    assert "tiny-64" in proc.stdout and "x hf" in proc.stdout
