"""benchmarks/lamb_zero.py runs end to end on CPU (tiny model, 1 and 2 ranks) and writes its JSON and table."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_lamb_zero_benchmark_tiny(tmp_path):
    out = tmp_path / "lamb.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lamb_zero.py"), "--preset", "tiny", "--vocab",
                           "512", "--reps", "1", "--worlds", "1,2", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert {(r["variant"], r["ranks"]) for r in rows} == {
        ("adamw_params", 1), ("lamb_params", 1), *((v, w) for v in ("adamw_flat", "lamb_flat", "lamb_flat_allreduce")
                                                   for w in (1, 2))}
    assert all(r["ms_per_step"] > 0 for r in rows if r["variant"] != "lamb_flat_allreduce" or r["ranks"] > 1)
    assert "vs adamw_flat" in proc.stdout
