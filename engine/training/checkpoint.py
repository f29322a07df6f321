"""Atomic, resumable training checkpoints.

Layout of run_dir/checkpoints/:
  step_00000500/            one complete checkpoint (DeepSpeed shards + ours)
    mp_rank_00_model_states.pt, *optim_states.pt   DeepSpeed: model, optimizer, fp32 masters, loss scaler
    trainer_state_rank{R}.pt                       ours, per rank: step, schedule, RNG states, data position
    meta.json                                      config + step; written last: its presence marks completion
  latest                                           name of the newest complete checkpoint (replaced atomically)
A checkpoint is written under `.tmp-step_N/` and renamed into place only after every rank has finished, so a crash
(even SIGKILL) mid-save leaves the previous checkpoints untouched; stale `.tmp-*` folders are removed on the next
save. Only the last `keep_last` complete checkpoints are kept."""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from engine import deepspeed as ds
from engine.config import ConfigError
from engine.training import distributed as D

META = "meta.json"
LATEST = "latest"


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointManager:
    def __init__(self, run_dir: str | Path, keep_last: int = 3):
        self.root = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last

    # ---- discovery ---------------------------------------------------------------------------------------------
    def complete(self) -> list[str]:
        """Tags of complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        tags = [p.name for p in self.root.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / META).is_file()]
        return sorted(tags)

    def latest(self) -> str | None:
        """The newest complete checkpoint: the `latest` pointer when it names one, else the highest step."""
        pointer = self.root / LATEST
        if pointer.is_file():
            tag = pointer.read_text(encoding="utf-8").strip()
            if (self.root / tag / META).is_file():
                return tag
        tags = self.complete()
        return tags[-1] if tags else None

    def meta(self, tag: str) -> dict:
        return json.loads((self.root / tag / META).read_text(encoding="utf-8"))

    # ---- save / load -------------------------------------------------------------------------------------------
    def save(self, engine, step: int, trainer_state: dict, meta: dict) -> Path:
        """Collective: every rank calls it. Returns the final directory."""
        tag = tag_for(step)
        tmp_tag = f".tmp-{tag}"
        tmp, final = self.root / tmp_tag, self.root / tag
        if D.rank() == 0:
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in self.root.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
        D.barrier()
        ds.save(engine, self.root, tmp_tag)
        tmp.mkdir(parents=True, exist_ok=True)
        torch.save(trainer_state, tmp / f"trainer_state_rank{D.rank()}.pt")
        D.barrier()
        if D.rank() == 0:
            _write_atomic(tmp / META, json.dumps({**meta, "step": step, "world_size": D.world_size()}, indent=2))
            _fsync_dir(tmp)
            if final.exists():  # re-saving a step (e.g. the end of a resumed run that had already finished)
                old = self.root / f".tmp-old-{tag}"
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
            _fsync_dir(self.root)
            _write_atomic(self.root / LATEST, tag + "\n")
            self._prune()
        D.barrier()
        return final

    def _prune(self) -> None:
        tags = self.complete()
        for tag in tags[: max(0, len(tags) - self.keep_last)]:
            shutil.rmtree(self.root / tag, ignore_errors=True)

    def load(self, engine, tag: str, module_only: bool = False) -> dict:
        """Restore the engine (model, optimizer, scaler) and return this rank's trainer state."""
        meta = self.meta(tag)
        if not module_only and meta.get("world_size") != D.world_size():
            raise ConfigError(f"{self.root / tag}: written by {meta.get('world_size')} ranks, resuming with "
                              f"{D.world_size()}; resume with the same number of ranks")
        ds.load(engine, self.root, tag, module_only=module_only)
        if module_only:
            return {}
        return torch.load(self.root / tag / f"trainer_state_rank{D.rank()}.pt", map_location="cpu",
                          weights_only=False)
