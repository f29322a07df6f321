"""The library logs through one `bertforge` logger: its level from --log-level or BERTFORGE_LOG_LEVEL, silenced or
routed like any library's; DeepSpeed's join chatter goes to DEBUG."""
import logging

import pytest

from bertforge.cli import main
from bertforge.log import configure, get_logger
from bertforge import distributed as D


@pytest.fixture(autouse=True)
def restore_level():
    logger = logging.getLogger("bertforge")
    before = logger.level
    yield
    logger.setLevel(before)


def test_levels_from_the_environment_and_the_flag(monkeypatch, caplog):
    monkeypatch.setenv("BERTFORGE_LOG_LEVEL", "warning")
    configure()
    with caplog.at_level(logging.NOTSET):
        D.log0("an info line")
        D.log0("a warning line", logging.WARNING)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("bertforge")] == ["a warning line"]
    assert get_logger("bertforge.training").getEffectiveLevel() == logging.WARNING
    assert main(["--log-level", "error"]) == 0
    assert logging.getLogger("bertforge").level == logging.ERROR


def test_bad_level_variable_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("BERTFORGE_LOG_LEVEL", "loud")
    assert main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "bertforge: error: BERTFORGE_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, got 'LOUD'"


def test_deepspeed_prints_go_to_debug(caplog):
    from bertforge.deepspeed import quiet_deepspeed

    configure("info")
    with caplog.at_level(logging.DEBUG, logger="bertforge"):
        with quiet_deepspeed():
            print("DeepSpeed deepspeed_shm_comm_op built successfully")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "deepspeed: DeepSpeed deepspeed_shm_comm_op built successfully")]
    import deepspeed

    assert deepspeed.utils.logger.level == logging.DEBUG  # --log-level debug shows DeepSpeed's own lines too
    with quiet_deepspeed():
        pass
    assert deepspeed.utils.logger.level == logging.WARNING  # at info, only its warnings


def test_result_lines_go_to_stdout_and_obey_the_level(tmp_path):
    """The default handler writes result lines (RESULT) to stdout and the rest to stderr; the level silences both."""
    import os
    import subprocess
    import sys

    code = ("from bertforge.log import get_logger, result_echo; result_echo('bertforge.x')('a result'); "
            "get_logger('bertforge.x').info('a diagnostic')")
    env = {k: v for k, v in os.environ.items() if k != "BERTFORGE_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert (out.returncode, out.stdout, out.stderr) == (0, "a result\n", "a diagnostic\n")
    out = subprocess.run([sys.executable, "-c", code], env={**env, "BERTFORGE_LOG_LEVEL": "warning"}, cwd=tmp_path,
                         capture_output=True, text=True)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")


# the command line (and a command-line script) may print; the library logs
PRINT_ALLOWED = ("engine/cli.py", "engine/commands/", "kernels/compile_check.py")


def test_the_library_does_not_print():
    """No `print` in engine/ or kernels/ outside the command line: neither a call nor `echo=print` as a default."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    found = []
    for path in sorted([*root.glob("engine/**/*.py"), *root.glob("kernels/**/*.py")]):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(PRINT_ALLOWED):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Name) and node.id == "print":
                found.append(f"{rel}:{node.lineno}")
    assert not found, f"print in the library (use bertforge.log's logger or result_echo): {found}"


def test_consolidating_a_zero_checkpoint_prints_nothing(tmp_path, capfd):
    """`bertforge export` of a ZeRO 1-3 run: DeepSpeed's zero_to_fp32 prints its progress ("Processing zero
    checkpoint", "Reconstructed fp32 state dict ...") to stdout; they go to DEBUG like its other chatter."""
    import os
    import subprocess
    import sys

    from bertforge.deepspeed import consolidated_fp32_state_dict

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "bertforge.cli", "pretrain", "--synthetic-vocab", "512", "--preset", "tiny",
           "--max-seq-length", "32", "--zero-stage", "2", "--steps", "1", "--micro-batch", "2", "--global-batch", "2",
           "--eval-samples", "2", "--output-dir", str(run), "--no-progress", "--no-export-hf", "--report-to", "none"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    capfd.readouterr()
    state = consolidated_fp32_state_dict(run / "checkpoints" / "step_00000001")
    out = capfd.readouterr().out
    assert state and all(v.dtype.is_floating_point for v in state.values())
    assert out == "", out
