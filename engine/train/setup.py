"""Joining the runtime: the device check, the launcher environment and the process group, in that order, for every
task. Idempotent: a second call in the same process checks again and finds the group joined. The training runtime
(bertforge.train.trainer) calls the two halves apart, so that a task's bad input fails before any rendezvous."""
from __future__ import annotations

import torch

from bertforge import deepspeed as ds
from bertforge import distributed as D
from bertforge.config.parallel import ParallelConfig
from bertforge.parallelize import check_device_support


def prepare_runtime(par: ParallelConfig) -> None:
    """ConfigError for settings this machine cannot run; fill the launcher variables (a plain process: one rank on
    a free port). Rank and world size are known afterwards; no process group yet."""
    check_device_support(par.precision, par.kernels)
    D.prepare_env()


def join_group(par: ParallelConfig) -> torch.device:
    """Join (or create) the process group through DeepSpeed with `par.dist_timeout_s`. Returns this rank's device."""
    ds.init_distributed(par.dist_timeout_s)
    return D.device()


def join_runtime(par: ParallelConfig) -> torch.device:
    """prepare_runtime, then join_group: the whole runtime for a task that needs nothing in between. Returns this
    rank's device."""
    prepare_runtime(par)
    return join_group(par)
