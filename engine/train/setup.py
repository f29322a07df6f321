"""Joining the runtime: the device check, the launcher environment and the process group, in that order, for every
task. Idempotent: a second call in the same process checks again and finds the group joined."""
from __future__ import annotations

import torch

from bertforge import deepspeed as ds
from bertforge import distributed as D
from bertforge.config.parallel import ParallelConfig
from bertforge.parallelize import check_device_support


def join_runtime(par: ParallelConfig) -> torch.device:
    """ConfigError for settings this machine cannot run; fill the launcher variables (a plain process: one rank on a
    free port); join (or create) the process group through DeepSpeed with `par.dist_timeout_s`. Returns this rank's
    device."""
    check_device_support(par.precision, par.kernels)
    D.prepare_env()
    ds.init_distributed(par.dist_timeout_s)
    return D.device()
