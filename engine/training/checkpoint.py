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
import shutil
from pathlib import Path

import torch

from engine import deepspeed as ds
from engine.errors import CheckpointError, ConfigError
from engine.io import fsync_dir, replace_dir, write_json, write_text
from engine.training import distributed as D

META = "meta.json"
LATEST = "latest"


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def is_checkpoint(path: str | Path) -> bool:
    """A complete checkpoint directory (its meta.json, written last, is present)."""
    return (Path(path) / META).is_file()


def complete_tags(root: str | Path) -> list[str]:
    """Tags of the complete checkpoints in a checkpoints folder, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and is_checkpoint(p))


def latest_tag(root: str | Path) -> str | None:
    """The newest complete checkpoint of a checkpoints folder: the `latest` pointer when it names one, else the
    highest step; None when there is none."""
    root = Path(root)
    pointer = root / LATEST
    if pointer.is_file():
        tag = pointer.read_text(encoding="utf-8").strip()
        if is_checkpoint(root / tag):
            return tag
    tags = complete_tags(root)
    return tags[-1] if tags else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory (.../step_N), or a run directory or its checkpoints/ folder (-> the latest complete
    checkpoint in it). Raises CheckpointError naming the path when there is none."""
    path = Path(path)
    if is_checkpoint(path):
        return path
    for root in (path / "checkpoints", path):
        tag = latest_tag(root)
        if tag is not None:
            return root / tag
    raise CheckpointError(f"{path}: not a checkpoint, run directory or checkpoints folder (no {META} found)")


def checkpoint_meta(ckpt_dir: str | Path) -> dict:
    """The meta.json of a checkpoint directory (configs, step, world size, finished flag)."""
    return json.loads((Path(ckpt_dir) / META).read_text(encoding="utf-8"))


class CheckpointManager:
    def __init__(self, run_dir: str | Path, keep_last: int = 3):
        self.root = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last

    # ---- discovery ---------------------------------------------------------------------------------------------
    def complete(self) -> list[str]:
        """Tags of complete checkpoints, oldest first."""
        return complete_tags(self.root)

    def latest(self) -> str | None:
        """The newest complete checkpoint (see latest_tag)."""
        return latest_tag(self.root)

    def meta(self, tag: str) -> dict:
        return checkpoint_meta(self.root / tag)

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
            write_json(tmp / META, {**meta, "step": step, "world_size": D.world_size()}, durable=True)
            fsync_dir(tmp)
            replace_dir(tmp, final)  # an existing final (re-saving a step) is swapped out, then removed
            fsync_dir(self.root)
            write_text(self.root / LATEST, tag + "\n", durable=True)
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
