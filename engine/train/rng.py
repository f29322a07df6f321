"""Seeding and the random-number state that a checkpoint carries (Python, numpy's global state, torch CPU and CUDA).

Data-side randomness (NSP pairing, masking, epoch permutations) never uses these global streams: it is derived from
(seed, epoch, sample) with engine/data/splitmix.py, so it is the same for any number of ranks and after a resume."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's global and torch's (CPU and all CUDA devices) random streams."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The global random states, for a checkpoint: {'python', 'numpy', 'torch'[, 'cuda']}."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` returned (the CUDA state only where a GPU is present)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
