"""SIGTERM under the launchers: the ranks agree on the stop request in the all-reduce every step already has, save a
checkpoint right after that step (well inside the launcher's 30 s grace period, although the next logging step is
1000 steps away), and exit with status 143; the checkpoint verifies and a 1-rank run resumes from it.
torchrun gets the signal and forwards it; the deepspeed launcher's whole process group gets it (as under SLURM)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bertforge.train.checkpoint import verify_checkpoint
from tests.training.conftest import REPO, run_worker, worker_cmd, worker_env

WORKER = Path(__file__).with_name("_reliability_worker.py")
DEEPSPEED = Path(sys.executable).with_name("deepspeed")


def _steps_done(out: Path) -> int:
    try:
        return int((out / "steps").read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _wait(predicate, proc: subprocess.Popen, timeout: float, what: str, launcher_may_exit: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if not launcher_may_exit and proc.poll() is not None and not predicate():
            raise AssertionError(f"{what}: launcher exited {proc.returncode} first:\n{proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def _exits(out: Path, ranks: int) -> list[str]:
    return [(out / f"exit_rank{r}").read_text() if (out / f"exit_rank{r}").is_file() else None for r in range(ranks)]


def _checked_checkpoint(out: Path, after_step: int) -> int:
    ckpts = out / "run" / "checkpoints"
    tag = (ckpts / "latest").read_text().strip()
    step = int(tag.split("_")[1])
    assert step >= after_step and verify_checkpoint(ckpts / tag) is None
    return step


def test_sigterm_to_torchrun(tmp_path):
    proc = subprocess.Popen(worker_cmd("preempt", tmp_path, 400, ranks=2, script=WORKER), env=worker_env(),
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: _steps_done(tmp_path) >= 3, proc, 240, "3 steps")
        proc.send_signal(signal.SIGTERM)  # torchrun forwards it and SIGKILLs the ranks 30 s later
        _, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    step = _checked_checkpoint(tmp_path, 3)
    assert _exits(tmp_path, 2) == ["143", "143"], err[-3000:]
    assert f"SIGTERM: checkpoint saved at step {step}" in err
    assert "worker rank" not in err  # no rank failed
    assert proc.returncode == 1  # torchrun's own status after a signal (its SignalException): docs/launch.md

    # 1 rank continues the 2-rank checkpoint to its planned end (a resume keeps the run's --steps: the resume rule)
    run_worker("preempt", tmp_path, 400, script=WORKER)
    assert _exits(tmp_path, 1) == ["0"] and _checked_checkpoint(tmp_path, 400) == 400


@pytest.mark.skipif(not DEEPSPEED.is_file(), reason="the deepspeed launcher script is not installed")
def test_sigterm_to_the_deepspeed_launcher_process_group(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(DEEPSPEED), "--num_gpus", "2", "--no_local_rank", "--master_port", str(port), str(WORKER), "preempt",
           str(tmp_path), "400"]
    proc = subprocess.Popen(cmd, env=worker_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _wait(lambda: _steps_done(tmp_path) >= 3, proc, 300, "3 steps")
        os.killpg(proc.pid, signal.SIGTERM)  # launcher, its per-node launch.py and the ranks, as SLURM signals
        # the deepspeed runner itself dies of the signal at once (no handler on one node); the ranks save and exit
        _wait(lambda: None not in _exits(tmp_path, 2), proc, 120, "both ranks' exit", launcher_may_exit=True)
        proc.communicate(timeout=120)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _checked_checkpoint(tmp_path, 3)
    assert _exits(tmp_path, 2) == ["143", "143"]
