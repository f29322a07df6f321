"""Atomic, verified, resumable training checkpoints.

Layout of run_dir/checkpoints/:
  step_00000500/            one complete checkpoint (DeepSpeed shards + ours)
    mp_rank_00_model_states.pt, *optim_states.pt   DeepSpeed: model, optimizer, fp32 masters, loss scaler
    trainer_state_rank{R}.pt                       ours, per rank: step, schedule, RNG states, data position
    meta.json                                      config, step, world size, and the size and CRC-32 of every other
                                                   file; written last: its presence marks completion
  latest                                           name of the newest complete checkpoint (replaced atomically)
  universal-step_00000500/  DeepSpeed's universal form of step_00000500 (made on demand to resume ZeRO 1-3 on another
                            number of ranks; removed with its checkpoint)
  damaged-step_00000800/    a checkpoint that failed verification on --resume (kept for inspection, never loaded)
A checkpoint is written under `.tmp-step_N/` and renamed into place only after every rank has finished and the
checksums are recorded, so a crash (even SIGKILL) mid-save leaves the previous checkpoints untouched; stale `.tmp-*`
folders are removed on the next save. Only the last `keep_last` complete checkpoints are kept.

On --resume the newest checkpoint is verified (sizes and CRC-32s, each rank reading a share of the files); a damaged
one is set aside with one line naming the bad file, and the newest complete older one is used. Resuming on another
number of ranks: ZeRO-0 checkpoints hold whole optimizer states and load as they are; ZeRO 1-3 ones are converted once
to DeepSpeed's universal checkpoint (per-parameter fp32 weights and moments) and loaded into the new partitioning."""
from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path

import torch

from bertforge import deepspeed as ds
from bertforge.errors import CheckpointError, ConfigError, UserError
from bertforge.hf import load_state_file
from bertforge.io import fsync_dir, replace_dir, write_json, write_text
from bertforge import distributed as D

META = "meta.json"
LATEST = "latest"
UNIVERSAL = "universal-"  # prefix of the universal form of a checkpoint
DAMAGED = "damaged-"  # prefix of a checkpoint set aside by verification
_CHUNK = 8 << 20


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
        if tag.startswith("step_") and is_checkpoint(root / tag):
            return tag
    tags = complete_tags(root)
    return tags[-1] if tags else None


def resolve_checkpoint(path: str | Path, verify: bool = False, log=None) -> Path:
    """A checkpoint directory (.../step_N), or a run directory or its checkpoints/ folder (-> the latest complete
    checkpoint in it). Raises CheckpointError naming the path when there is none. `verify`: the files are checked
    against meta.json's sizes and CRC-32s (verify_checkpoint); in a run directory a checkpoint that fails is
    skipped for the previous one, as --resume does, with a line to `log` (default: stderr of rank 0); a given
    step_N that fails is a CheckpointError naming the bad file."""
    path = Path(path)
    if is_checkpoint(path):
        bad = verify_checkpoint(path) if verify else None
        if bad:
            raise CheckpointError(f"{bad} (the checkpoint is damaged; give an earlier step_N or the run directory)")
        return path
    for root in (path / "checkpoints", path):
        tag = latest_tag(root)
        if tag is None:
            continue
        if not verify:
            return root / tag
        tags = [tag] + [t for t in reversed(complete_tags(root)) if t != tag]
        for i, t in enumerate(tags):
            bad = verify_checkpoint(root / t)
            if bad is None:
                return root / t
            (log or D.log0)(f"warning: {bad}; " + (f"trying the previous checkpoint {tags[i + 1]}"
                                                   if i + 1 < len(tags) else "no earlier checkpoint"))
        raise CheckpointError(f"{root}: every checkpoint is damaged (see the lines above)")
    raise CheckpointError(f"{path}: not a checkpoint, run directory or checkpoints folder (no {META} found)")


def checkpoint_meta(ckpt_dir: str | Path) -> dict:
    """The meta.json of a checkpoint directory (configs, step, world size, finished flag, file checksums). Raises
    CheckpointError naming the file when it cannot be read."""
    path = Path(ckpt_dir) / META
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return meta


# ---- checksums ---------------------------------------------------------------------------------------------------
def file_crc32(path: str | Path) -> str:
    """CRC-32 of a file's bytes as 8 hex digits (zlib; ~0.8 GB/s on one core)."""
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def _files(ckpt_dir: Path) -> list[str]:
    """Every file of a checkpoint folder except meta.json, as sorted relative paths."""
    return sorted(str(p.relative_to(ckpt_dir)) for p in ckpt_dir.rglob("*") if p.is_file() and p.name != META)


def _share(items: list, rank: int, world: int) -> list:
    return items[rank::world]


def record_files(ckpt_dir: str | Path, rank: int = 0, world: int = 1) -> dict[str, dict]:
    """{relative path: {"bytes": size, "crc32": hex}} for this rank's share (every world-th file from `rank`) of the
    files of a checkpoint folder."""
    ckpt_dir = Path(ckpt_dir)
    return {name: {"bytes": (ckpt_dir / name).stat().st_size, "crc32": file_crc32(ckpt_dir / name)}
            for name in _share(_files(ckpt_dir), rank, world)}


def verify_checkpoint(ckpt_dir: str | Path, rank: int = 0, world: int = 1) -> str | None:
    """Check this rank's share of a checkpoint's files against the sizes and CRC-32s in its meta.json. Returns None
    when they match, else one line naming the first bad file. A checkpoint written before checksums were recorded
    passes when its meta.json reads."""
    ckpt_dir = Path(ckpt_dir)
    try:
        meta = checkpoint_meta(ckpt_dir)
    except CheckpointError as exc:
        return str(exc)
    files = meta.get("files")
    if not isinstance(files, dict):
        return None
    for name in _share(sorted(files), rank, world):
        path, want = ckpt_dir / name, files[name]
        if not path.is_file():
            return f"{path}: missing"
        size = path.stat().st_size
        if size != want["bytes"]:
            return f"{path}: {size} bytes, {META} records {want['bytes']}"
        crc = file_crc32(path)
        if crc != want["crc32"]:
            return f"{path}: CRC-32 {crc}, {META} records {want['crc32']}"
    return None


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

    def resume_tag(self, log=D.log0) -> str | None:
        """Collective: the newest complete checkpoint whose files match their recorded sizes and CRC-32s (each rank
        reads a share). A damaged one is renamed to damaged-step_N (rank 0) with one line naming the bad file, and
        the next older one is tried. None when there is no complete checkpoint; CheckpointError when none verifies."""
        rank, world = D.rank(), D.world_size()
        tags = self.complete()
        latest = self.latest()
        if latest is not None:  # the pointer first (normally also the highest step)
            tags = [t for t in tags if t != latest] + [latest]
        problems = []
        for tag in reversed(tags):
            found = D.all_gather_object(verify_checkpoint(self.root / tag, rank, world))
            bad = next((p for p in found if p), None)
            if bad is None:
                if problems:
                    log(f"resuming from {self.root / tag} instead")
                return tag
            problems.append(bad)
            log(f"checkpoint {self.root / tag} is damaged ({bad}); set aside as {DAMAGED}{tag}")
            D.barrier()
            if rank == 0:
                replace_dir(self.root / tag, self.root / f"{DAMAGED}{tag}")
                if (self.root / LATEST).is_file() and latest == tag:
                    (self.root / LATEST).unlink()
            D.barrier()
        if problems:
            raise CheckpointError(f"no checkpoint in {self.root} verifies ({len(problems)} set aside as "
                                  f"{DAMAGED}step_*); the newest: {problems[0]}")
        return None

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
        files: dict = {}
        for share in D.all_gather_object(record_files(tmp, D.rank(), D.world_size())):
            files.update(share)
        if D.rank() == 0:
            write_json(tmp / META, {**meta, "step": step, "world_size": D.world_size(), "files": files},
                       durable=True)
            fsync_dir(tmp)
            replace_dir(tmp, final)  # an existing final (re-saving a step) is swapped out, then removed
            shutil.rmtree(self.root / f"{UNIVERSAL}{tag}", ignore_errors=True)  # of a replaced checkpoint
            fsync_dir(self.root)
            write_text(self.root / LATEST, tag + "\n", durable=True)
            self._prune()
        D.barrier()
        return final

    def _prune(self) -> None:
        tags = self.complete()
        for tag in tags[: max(0, len(tags) - self.keep_last)]:
            shutil.rmtree(self.root / tag, ignore_errors=True)
        for universal in self.root.glob(f"{UNIVERSAL}*"):
            if not is_checkpoint(self.root / universal.name[len(UNIVERSAL):]):
                shutil.rmtree(universal, ignore_errors=True)

    def needs_universal(self, tag: str, zero_stage: int) -> bool:
        """Whether resuming `tag` here needs DeepSpeed's universal form: ZeRO 1-3 written by another number of
        ranks. A change of ZeRO stage is refused (ConfigError)."""
        meta = self.meta(tag)
        saved = int(meta.get("train_config", {}).get("zero_stage", zero_stage))
        if saved != zero_stage:
            raise ConfigError(f"{self.root / tag}: written at --zero-stage {saved}, resuming at {zero_stage}; "
                              f"resume with --zero-stage {saved}")
        return zero_stage > 0 and meta.get("world_size") != D.world_size()

    def make_universal(self, tag: str, log=D.log0) -> str:
        """Collective: rank 0 converts checkpoint `tag` into universal-`tag` (once; kept until its checkpoint is
        pruned) while the others wait. Returns the universal tag to load with the engine configured for it
        (bertforge.deepspeed.build_ds_config(..., load_universal=True))."""
        name = f"{UNIVERSAL}{tag}"
        out = self.root / name
        if D.rank() == 0 and not (out / "zero").is_dir():
            meta = self.meta(tag)
            log(f"converting {self.root / tag} (written by {meta.get('world_size')} ranks) to DeepSpeed's universal "
                f"checkpoint for {D.world_size()} ranks")
            tmp = self.root / f".tmp-{name}"
            shutil.rmtree(tmp, ignore_errors=True)
            ds.to_universal(self.root / tag, tmp, workers=max(1, min(4, os.cpu_count() or 1)))
            replace_dir(tmp, out)
            fsync_dir(self.root)
        D.barrier()
        return name

    def load(self, engine, tag: str, module_only: bool = False, universal: str | None = None) -> dict:
        """Restore the engine (model, optimizer, scaler) and return this rank's trainer state: its own file, or rank
        0's when the checkpoint was written by fewer ranks; the state's `saved_world_size` says by how many.
        `universal`: the tag from make_universal (ZeRO 1-3 on another number of ranks; the engine must have been
        built with load_universal)."""
        meta = self.meta(tag)
        saved_world = int(meta.get("world_size", D.world_size()))
        if universal is None and not module_only and saved_world != D.world_size() and \
                int(meta.get("train_config", {}).get("zero_stage", 0)) > 0:
            raise ConfigError(f"{self.root / tag}: written by {saved_world} ranks at ZeRO > 0; resuming with "
                              f"{D.world_size()} needs its universal form (CheckpointManager.make_universal)")
        try:
            ds.load(engine, self.root, universal or tag, module_only=module_only)
        except UserError:
            raise
        except (RuntimeError, OSError, KeyError, ValueError, AssertionError, EOFError) as exc:
            raise CheckpointError(f"{self.root / (universal or tag)}: DeepSpeed could not load it "
                                  f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]})") from None
        if module_only:
            return {}
        own = self.root / tag / f"trainer_state_rank{D.rank()}.pt"
        path = own if own.is_file() else self.root / tag / "trainer_state_rank0.pt"
        state = load_state_file(path)  # weights_only=True: tensors, containers and numpy RNG arrays only
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: expected a dict of trainer state, got {type(state).__name__}")
        state["saved_world_size"] = saved_world
        return state
