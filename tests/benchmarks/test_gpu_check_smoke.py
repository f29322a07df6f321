"""The GPU check scripts (benchmarks/gpu_check_*.py, run by gpu_check.sh on the lent GPU) run end to end on CPU on
small shapes under TRITON_INTERPRET=1, so a GPU session is never spent on a bug in the scripts themselves: every
check passes, the JSON files and the table are written."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["attention", "kernels"])
def test_gpu_check_script_smoke_on_cpu(name, tmp_path):
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"gpu_check_{name}.py"), "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check = json.loads((tmp_path / f"{name}_check.json").read_text())
    bench = json.loads((tmp_path / f"{name}_bench.json").read_text())
    assert check["all_ok"] and len(check["checks"]) >= 10 and not any("error" in c for c in check["checks"])
    assert bench["rows"] and f"{name}: all_ok=True" in proc.stdout
