"""Process-group facts and helpers: rank, world, log-on-rank-0, all-reduce, the environment set-up and preemption.
Low enough for data/, parallelize and the training runtime alike (torch only). Works under `deepspeed`, `torchrun`
(env rendezvous), SLURM's `srun` (SLURM_PROCID/NTASKS/LOCALID, inside an srun step only) and as a plain single
process (a one-rank group on a free port). Before the group is joined, rank and world come from the launcher's
variables."""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys

import torch
import torch.distributed as dist

from bertforge.log import get_logger

PREEMPTED = 143  # exit status after a SIGTERM-triggered checkpoint (128 + SIGTERM)
_LOG = get_logger("bertforge.training")  # level: --log-level / BERTFORGE_LOG_LEVEL (engine/log.py)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_env() -> None:
    """Fill RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT for the cases launchers leave them empty."""
    env = os.environ
    # SLURM_* describe the ranks only inside an srun step (SLURM_STEP_ID set); a bare command in an sbatch script
    # sees the allocation's SLURM_NTASKS while being one process, so it runs as a plain single process
    if "RANK" not in env and "SLURM_STEP_ID" in env and "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        env["RANK"], env["WORLD_SIZE"] = env["SLURM_PROCID"], env["SLURM_NTASKS"]
        env.setdefault("LOCAL_RANK", env.get("SLURM_LOCALID", "0"))
    if "RANK" not in env:  # plain single process
        env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        env.setdefault("MASTER_PORT", str(_free_port()))
    env.setdefault("LOCAL_RANK", "0")
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    env.setdefault("MASTER_PORT", "29500")


def join_group(timeout_s: float = 600) -> None:
    """Join the launcher's process group (NCCL on GPUs, gloo on CPU) when it announced more than one rank and the
    group is not joined yet. The training runtime joins through DeepSpeed instead (bertforge.deepspeed)."""
    prepare_env()
    if launched_world_size() > 1 and not is_initialized():
        from datetime import timedelta

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=timedelta(seconds=timeout_s))


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else int(os.environ.get("RANK", 0))


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else int(os.environ.get("WORLD_SIZE", 1))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def launched_world_size() -> int:
    """The world size the launcher announced (WORLD_SIZE; 1 when none), whether or not the group is joined yet."""
    return int(os.environ.get("WORLD_SIZE", 1))


def device() -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
        return torch.device("cuda", local_rank())
    return torch.device("cpu")


def barrier() -> None:
    if is_initialized() and world_size() > 1:
        dist.barrier()


def all_reduce_sum(values: list[float], dev: torch.device) -> list[float]:
    """Sum a few floats over ranks (fp64 so counts stay exact). One rank: the values themselves (no device trip)."""
    if not (is_initialized() and world_size() > 1):
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_max(values: list[float], dev: torch.device) -> list[float]:
    if not (is_initialized() and world_size() > 1):
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def log0(message: str, level: int = logging.INFO) -> None:
    """`message` through the `bertforge` logger (engine/log.py), on rank 0 only."""
    if rank() == 0:
        _LOG.log(level, message)


def finish(code: int) -> None:
    """End a worker of a multi-rank job: every rank at the barrier, group destroyed, then a hard exit — a normal
    interpreter exit aborted ~3% of two-rank gloo runs on CPU (DeepSpeed 0.19.8, torch 2.13). A single process returns normally."""
    sys.stdout.flush()
    sys.stderr.flush()
    if is_initialized() and world_size() > 1:
        if code == 0:
            dist.barrier()
            dist.destroy_process_group()
        os._exit(code)


_PEER_FAILURE = ("connection closed", "connection reset", "broken pipe", "timed out", "timeout", "nccl",
                 "gloo", "socket")


def describe_failure(exc: BaseException) -> str:
    """One line for a rank's failure; collective errors are named as what they usually are: a peer died or hung."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > 300:
        text = text[:300] + "..."
    if isinstance(exc, (RuntimeError, OSError)) and any(s in text.lower() for s in _PEER_FAILURE):
        return f"a collective failed, another rank probably died or hung (see its log): {text}"
    return text


def all_gather_object(obj) -> list:
    """[each rank's `obj`] in rank order (picklable objects; a collective). One rank: [obj]."""
    if not (is_initialized() and world_size() > 1):
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


class Preemption:
    """SIGTERM -> a flag (the main thread's handler; restored on exit). The trainers agree on it across ranks."""

    def __init__(self):
        self.flag = False
        self.previous = None

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread
            self.previous = None
        return self

    def _handler(self, signum, frame):
        self.flag = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
