"""Helpers for the training tests: run tests/training/_worker.py as a plain process or under torchrun. Workers share
DeepSpeed's JIT cache ($TORCH_EXTENSIONS_DIR when set, else torch's default), so deepspeed_shm_comm builds once."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("_worker.py")
REPO = Path(__file__).resolve().parents[2]


def worker_env(**extra) -> dict:
    env = dict(os.environ, DS_ACCELERATOR="cpu", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def worker_cmd(mode: str, out: Path, *args, ranks: int = 1, script: Path = WORKER) -> list[str]:
    if ranks == 1:
        return [sys.executable, str(script), mode, str(out), *map(str, args)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
            str(script), mode, str(out), *map(str, args)]


def run_worker(mode: str, out: Path, *args, ranks: int = 1, timeout: float = 240, check: bool = True,
               script: Path = WORKER, **env):
    proc = subprocess.run(worker_cmd(mode, out, *args, ranks=ranks, script=script), env=worker_env(**env), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"worker {mode} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc
