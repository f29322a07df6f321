"""benchmarks/gpu_check.py, the one prepared GPU run: the budget, the step order, the finetune commands. The whole
call is rehearsed on CPU by scripts/gpu_rehearsal.sh (CI, .ci/run); the mechanisms it relies on are tested one by one
in test_gpu_check_faults.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_budget_skips_what_does_not_fit(tmp_path):
    """With a 1-second budget the preflight is skipped for time and every later step because preflight did not
    run; the summary still comes back."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), BERTFORGE_GPU_SCRATCH=str(tmp_path / "scratch"))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--budget", "1",
                           "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=300)
    summary = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    status = {r["step"]: r["status"] for r in summary["steps"]}
    assert "left, expected" in status["preflight"], proc.stdout
    assert all(s == "skipped: preflight failed (see its log)" for k, s in status.items() if k != "preflight"), status
    assert summary["total_s"] < 60 and sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "gpu_check.json", "gpu_check_logs.tar.gz", "gpu_check_table.txt"]


def test_plan_order_and_expected_seconds():
    """The key questions first; the required steps' expected seconds fit the default budget with room for one
    optional step; every cap is at most the device command's limit."""
    sys.path.insert(0, str(ROOT))
    import benchmarks.gpu_check as gc

    plan = gc.steps(dry=False)
    names = [s.name for s in plan]
    assert names[:2] == ["preflight", "e2e_base128"]
    assert names.index("attention") > names.index("lamb") > names.index("bias_gelu")
    assert names.index("loop") < names.index("model_switch") < names.index("finetune")
    assert all(s.optional for s in plan[names.index("finetune") + 1:])
    required = sum(s.expected_s for s in plan if not s.optional)
    assert required <= 480 - 50, required
    assert "ours,hf,ours-no-kernels" in plan[1].argv and "--profile" in plan[1].argv


def test_finetune_step_command_lines_parse(tmp_path):
    """The finetune steps' commands use flags that exist: the CLI's own parser and the throughput benchmark's accept
    them."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))  # finetune_throughput imports its sibling _timing
    import benchmarks.finetune_throughput as ft
    import benchmarks.gpu_check as gc
    from bertforge.cli import build_parser

    (fp16,) = gc.finetune_commands(tmp_path, "fp16")
    bf16, throughput = gc.finetune_commands(tmp_path, "more")
    for cmd, precision in ((fp16, "fp16"), (bf16, "bf16")):
        assert cmd[4] == "classify"
        args = build_parser().parse_args(cmd[3:])
        assert args.precision == precision and args.kernels == "triton"
    ours = ft.build_parser().parse_args(throughput[2:])
    assert (ours.shapes, ours.precision, ours.batch) == ("base-128", "bf16", 32)
