"""benchmarks/gpu_check.py, the one prepared GPU run, dry-run on CPU (tiny shapes, Triton interpreter) so that a
device session is never spent on a bug in the script: every step runs in its own process within the budget, passes
(or is skipped with its reason), and at most 3 files come back, the archive holding every step's log."""
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run_on_cpu(tmp_path):
    pytest.importorskip("triton")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TRITON_INTERPRET", None)  # the script sets it per step: the throughput steps run without it
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--budget", "1500",
                           "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=1800)
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert proc.returncode == 0 and summary["all_ok"], proc.stdout[-4000:] + proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.json", "gpu_check_logs.tar.gz",
                                                          "gpu_check_table.txt"]
    status = {r["step"]: r["status"] for r in summary["steps"]}
    for step in ("versions", "attention", "bias_gelu", "layer_norm", "mlm_loss", "masking", "lamb", "model_switch",
                 "e2e_base128", "e2e_large128", "ablations"):
        assert status[step] == "ok", (step, status[step])
    assert status["finetune"] == "ok" or status["finetune"].startswith("skipped: ")
    assert status["loop"] == "ok" or status["loop"].startswith("skipped: ")
    with tarfile.open(tmp_path / "gpu_check_logs.tar.gz") as tar:
        names = tar.getnames()
    assert "attention/attention_check.json" in names and "e2e_base128/tt.json" in names
    assert (tmp_path / "gpu_check_logs.tar.gz").stat().st_size < 16 * 2**20
    assert "total" in (tmp_path / "gpu_check_table.txt").read_text()


def test_budget_skips_what_does_not_fit(tmp_path):
    """With a 1-second budget every step after the first is skipped and says why; nothing is left running."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--budget", "1",
                           "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    skipped = [r for r in summary["steps"] if r["status"].startswith("skipped")]
    assert len(skipped) >= len(summary["steps"]) - 1 and summary["total_s"] < 60, proc.stdout
    assert any("left, expected" in r["status"] for r in skipped)


def test_finetune_step_command_lines_parse(tmp_path):
    """The finetune step's commands (skipped in the dry run without the carried model) use flags that exist: the
    CLI's own parser and the throughput benchmark's accept them."""
    sys.path.insert(0, str(ROOT))
    import benchmarks.finetune_throughput as ft
    import benchmarks.gpu_check as gc
    from bertforge.cli import build_parser

    commands = gc.finetune_commands(tmp_path)
    assert [c[4] for c in commands[:2]] == ["classify", "classify"]
    for cmd in commands[:2]:
        args = build_parser().parse_args(cmd[3:])
        assert args.precision in ("bf16", "fp16") and args.kernels == "triton"
    ours = ft.build_parser().parse_args(commands[2][2:])
    assert (ours.shapes, ours.precision, ours.batch) == ("base-128", "bf16", 32)
