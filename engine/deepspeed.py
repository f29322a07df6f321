"""DeepSpeed integration — the only module that imports deepspeed.

- `build_ds_config`: our settings -> DeepSpeed's JSON; `merge_user_config`: a user's JSON wins where it speaks,
  except where it contradicts a flag given explicitly on the command line (one-line error).
- `init_distributed` / `initialize`: process group (NCCL on GPUs, gloo on CPU with DS_ACCELERATOR=cpu) with a
  collective timeout; the engine wraps our model with a client optimizer (torch AdamW or our Lamb — DeepSpeed's
  fused LAMB/Adam are JIT-built and unavailable on CPU). Under ZeRO-3, parameters that a module reads from its
  children directly (`params_read_in_forward()`) are registered as external parameters so they are gathered.
- `flat_partitions`: where each parameter lies in the flat fp32 partitions that ZeRO 1-3 (and the bf16 ZeRO-1
  optimizer) hand the client optimizer, from DeepSpeed's own maps (`_hp_mapping` fragments for ZeRO 1-2, the
  per-parameter `ds_tensor` partitions for ZeRO-3); bertforge.optim.Lamb takes its per-parameter norms over them.
- `save` / `load`: engine checkpoints (model, optimizer incl. fp32 masters and loss scaler, per-rank shards);
  `to_universal`: DeepSpeed's universal form of a ZeRO 1-3 checkpoint, to resume it on another number of ranks.
- `consolidated_fp32_state_dict`: one fp32 state dict from any checkpoint (ZeRO 0-3 shards)."""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from bertforge.errors import CheckpointError, ConfigError, TrainingError
from bertforge.hf import load_state_file
from bertforge.io import read_json_object
from bertforge.log import get_logger
from bertforge.optim import FlatPieces

_ENGINE = None  # the deepspeed module, imported lazily so `bertforge --help` stays fast
_LOG = get_logger("bertforge.deepspeed")


def _ds():
    global _ENGINE
    if _ENGINE is None:
        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        try:
            import deepspeed
        except ImportError as exc:
            raise ConfigError("deepspeed is not installed (every training command runs on it): pip install deepspeed, after torch, with --no-build-isolation") from exc
        _ENGINE = deepspeed
    return _ENGINE


# ---- config --------------------------------------------------------------------------------------------------
def load_user_config(path: str | Path) -> dict:
    path = Path(path)
    raw = read_json_object(path, "DeepSpeed config")
    for key in ("optimizer", "scheduler"):
        if key in raw:
            raise ConfigError(f"{path}: the {key!r} section is not supported (the optimizer and schedule come from "
                              f"--optimizer/--lr/--warmup-steps/--decay; remove it)")
    return raw


def _user_precision(user: dict) -> str | None:
    on = [name for name in ("bf16", "fp16") if isinstance(user.get(name), dict) and user[name].get("enabled")]
    if len(on) > 1:
        raise ConfigError("DeepSpeed config enables both bf16 and fp16")
    if on:
        return on[0]
    if any(isinstance(user.get(n), dict) and user[n].get("enabled") is False for n in ("bf16", "fp16")):
        return "fp32"
    return None


def merge_user_config(cfg, user: dict, explicit: set[str], world_size: int, source: str = "DeepSpeed config"):
    """Fold the user's DeepSpeed JSON into `cfg` (a config with the flat view `to_flat()` / `replace(**fields)` and
    the fields micro_batch, global_batch, max_grad_norm, zero_stage, precision): where the JSON speaks and the flag
    was not given explicitly, the JSON's value is taken; where both speak and disagree, a ConfigError names both."""
    flat = cfg.to_flat()
    spoken: dict[str, Any] = {}
    if "train_micro_batch_size_per_gpu" in user:
        spoken["micro_batch"] = int(user["train_micro_batch_size_per_gpu"])
    if "train_batch_size" in user:
        spoken["global_batch"] = int(user["train_batch_size"])
    elif "gradient_accumulation_steps" in user:
        micro = spoken.get("micro_batch", flat["micro_batch"])
        spoken["global_batch"] = micro * world_size * int(user["gradient_accumulation_steps"])
    if "gradient_clipping" in user:
        spoken["max_grad_norm"] = float(user["gradient_clipping"])
    if isinstance(user.get("zero_optimization"), dict) and "stage" in user["zero_optimization"]:
        spoken["zero_stage"] = int(user["zero_optimization"]["stage"])
    precision = _user_precision(user)
    if precision is not None:
        spoken["precision"] = precision
    changes = {}
    for name, value in spoken.items():
        ours = flat[name]
        if name in explicit and ours != value:
            raise ConfigError(f"{source} sets {name.replace('_', '-')}={value!r} but --{name.replace('_', '-')} "
                              f"{ours!r} was given; drop one of them")
        changes[name] = value
    return cfg.replace(**changes) if changes else cfg


def build_ds_config(*, micro_batch: int, global_batch: int, grad_accum: int, max_grad_norm: float, zero_stage: int,
                    precision: str, user: dict | None = None, load_universal: bool = False) -> dict:
    """DeepSpeed JSON for these settings (already merged with `user`); `user`'s remaining keys are layered on top.
    `load_universal`: the engine will load a universal checkpoint (`to_universal`; resuming on another rank count)."""
    out: dict[str, Any] = {
        "train_batch_size": global_batch,
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": max_grad_norm,
        "zero_optimization": {"stage": zero_stage},
        "zero_allow_untested_optimizer": True,  # our client optimizers (torch AdamW, bertforge.optim.Lamb)
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "loss_scale": 0, "initial_scale_power": 16,
                 "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1},
        "steps_per_print": 10 ** 9,  # progress and metrics are ours
        "wall_clock_breakdown": False,
    }
    if load_universal:
        out["checkpoint"] = {"load_universal": True}
    if zero_stage == 3:
        # The model is small next to the activations in pretraining; gather whole layers at once.
        out["zero_optimization"].update({"stage3_param_persistence_threshold": 0, "stage3_prefetch_bucket_size": 0})
    return _deep_merge(out, user or {})


def _deep_merge(base: dict, top: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# ---- process group and engine --------------------------------------------------------------------------------
def init_distributed(timeout_s: int) -> None:
    """Join (or create, for a plain single process) the default process group; NCCL on GPUs, gloo on CPU."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "gloo":
        for line in comm_op_build_locks():
            _LOG.warning(line)
    try:
        with quiet_deepspeed():
            _ds().init_distributed(dist_backend=backend, timeout=timedelta(seconds=timeout_s), verbose=False)
    except (RuntimeError, OSError) as exc:  # torch's DistStoreError / DistNetworkError are RuntimeErrors
        if "time" not in str(exc).lower():
            raise
        raise TrainingError(rendezvous_failure(str(exc), timeout_s)) from None


SHM_COMM_OP = "deepspeed_shm_comm"  # the JIT-built op DeepSpeed's CPU accelerator loads when joining the group


def jit_build_root() -> Path:
    """Where torch builds JIT extensions (DeepSpeed's ops among them): $TORCH_EXTENSIONS_DIR, else torch's default
    root, which holds one `py<ver>_<flavour>` folder per build flavour."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root:
        return Path(root)
    from torch.utils.cpp_extension import get_default_build_root

    return Path(get_default_build_root())


def jit_build_locks(root: Path, op: str = "*") -> list[Path]:
    """The build locks of extension `op` (every one with "*") under `root`: torch.utils.cpp_extension's FileBaton,
    `<op>/lock`, or `<flavour>/<op>/lock` under torch's default root. A build removes its lock when done; a process
    killed mid-build leaves it, and the next build of that op waits on it without a word."""
    return sorted([*root.glob(f"{op}/lock"), *root.glob(f"*/{op}/lock")])


def comm_op_build_locks(now: float | None = None) -> list[str]:
    """One line per build lock of DeepSpeed's CPU comm op that exists now (`jit_build_locks`). Joining the group
    waits on such a lock: a build in another process removes it within about a minute, a killed one never."""
    now = time.time() if now is None else now
    lines = []
    for lock in jit_build_locks(jit_build_root(), SHM_COMM_OP):
        try:
            age_min = (now - lock.stat().st_mtime) / 60
        except FileNotFoundError:  # the build just finished
            continue
        lines.append(f"waiting for the build of DeepSpeed's CPU communication op: {lock} exists ({age_min:.0f} min "
                     f"old); a build takes about a minute, so if no other process is building it, delete that file")
    return lines


@contextlib.contextmanager
def quiet_deepspeed():
    """DeepSpeed's own chatter at the `bertforge` logger's DEBUG level: its logger ("DeepSpeed") at WARNING unless
    --log-level debug, and what it prints to stdout while joining the group (the CPU accelerator's
    "DeepSpeed deepspeed_shm_comm_op built successfully" is a bare print in deepspeed/comm/torch.py) captured and
    logged at DEBUG."""
    deepspeed = _ds()
    debug = _LOG.isEnabledFor(logging.DEBUG)
    deepspeed.utils.logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            yield
    finally:
        for line in captured.getvalue().splitlines():
            _LOG.debug("deepspeed: %s", line)


def rendezvous_failure(message: str, timeout_s: int) -> str:
    """One line for a rendezvous that timed out: how many ranks joined (from torch's TCPStore message, "1/2 clients
    joined", which rank 0 sees; other ranks only know that rank 0's store never answered) and which launcher the
    environment says was expected to start the other ranks."""
    env = os.environ
    world, addr = env.get("WORLD_SIZE", "?"), f"{env.get('MASTER_ADDR', '?')}:{env.get('MASTER_PORT', '?')}"
    m = re.search(r"(\d+)/(\d+) clients joined", message)
    joined = (f"{m.group(1)} of {m.group(2)} ranks joined" if m else
              f"rank {env.get('RANK', '?')} of {world} found no rank 0 at {addr}")
    launcher = ("srun (SLURM_STEP_ID is set)" if "SLURM_STEP_ID" in env else
                "torchrun" if "TORCHELASTIC_RUN_ID" in env else
                "the deepspeed launcher" if "CROSS_RANK" in env or "DS_LAUNCH" in env else
                "a launcher that starts WORLD_SIZE processes (torchrun, srun or deepspeed)")
    return (f"rendezvous at {addr} timed out after {timeout_s}s: {joined}; the other ranks were to be started by "
            f"{launcher} with the same MASTER_ADDR/MASTER_PORT (--dist-timeout-s sets the wait)")


def destroy_distributed(barrier: bool = True) -> None:
    """Leave and destroy the default process group (after a barrier when there are several ranks and `barrier`)
    through DeepSpeed, which drops its cached groups with it, so that a later `init_distributed` in this process
    starts afresh."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if barrier and dist.get_world_size() > 1:
        dist.barrier()
    _ds().comm.destroy_process_group()


def register_external_parameters(model: torch.nn.Module) -> int:
    """ZeRO-3: modules whose forward reads child parameters directly must have them gathered with the module."""
    count = 0
    for module in model.modules():
        reader = getattr(module, "params_read_in_forward", None)
        if reader is None:
            continue
        for p in reader():
            _ds().zero.register_external_parameter(module, p)
            count += 1
    return count


def initialize(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ds_config: dict):
    """DeepSpeed engine around `model` with our client optimizer. The LR schedule stays with the caller (it steps
    only when an update was applied, and is checkpointed with our trainer state).

    With one data-parallel rank at ZeRO 0 the engine's gradient all-reduce is switched off: DeepSpeed would flatten
    every gradient into a buffer, reduce it over the one rank, divide by 1 and copy it back (two passes over the
    gradients; 22 ms of a 92 ms step of the tiny finetuning benchmark on CPU), an identity (updates bit-equal, tested).
    ZeRO 1-3 keep it: their optimizers move gradients into their partitions in that call."""
    stage = ds_config["zero_optimization"].get("stage", 0)
    if stage == 3:
        register_external_parameters(model)
    engine, *_ = _ds().initialize(model=model, optimizer=optimizer, config=ds_config, dist_init_required=False)
    if stage == 0 and engine.dp_world_size == 1:
        engine.enable_backward_allreduce = False
    apply_foreach_clipping(engine)
    undo_unfused_init_step(engine)
    return engine


def undo_unfused_init_step(engine) -> bool:
    """DeepSpeed's FP16_UnfusedOptimizer (bf16 or fp16 at ZeRO 0 around a client optimizer) builds its optimizer
    states by running one `optimizer.step()` on zero gradients (deepspeed 0.19.8,
    fp16/unfused_optimizer.py `initialize_optimizer_states`). torch's AdamW counts that as step 1, so every real update
    takes the bias correction of the step after it (the first update 0.74x Adam's with betas (0.9, 0.999)), and its
    decoupled weight decay is applied once to the fp32 master weights. Measured on a tiny pretraining run, bf16: ZeRO 0
    lost 0.04 of loss at step 2 against ZeRO 1 and fp32. Both are undone here: the masters are copied back from the
    model's low-precision weights (they were cloned from them exactly) and the client optimizer's states are dropped
    (created again at the first real step, as at ZeRO 1-3). Returns whether it applied."""
    opt = engine.optimizer
    if type(opt).__name__ != "FP16_UnfusedOptimizer":
        return False
    with torch.no_grad():
        for masters, params in zip(opt.fp32_groups, opt.fp16_groups):
            for master, param in zip(masters, params):
                master.copy_(param)
    opt.optimizer.state.clear()
    return True


def apply_foreach_clipping(engine) -> bool:
    """ZeRO 0 in fp32 (the one case where DeepSpeed clips the module's own gradients, `clip_fp32_gradients`): clip
    with torch's multi-tensor `clip_grad_norm_` (two foreach calls) instead of DeepSpeed's loop, which takes one
    norm and one multiply per parameter and all-reduces the norm over the data-parallel group even on one rank
    (10 of a 139 ms step of the tiny finetuning benchmark on CPU). Same rule (coefficient max_norm / (norm + 1e-6),
    at most 1): the gradients there are already all-reduced, equal on every rank, so the local norm is DeepSpeed's
    rank-averaged one (up to rounding; tests/engine/test_single_rank_allreduce.py). Returns whether it applied."""
    if (engine.zero_optimization_stage() > 0 or engine.bfloat16_enabled() or engine.fp16_enabled()
            or engine.mpu is not None or engine.gradient_clipping() <= 0.0):
        return False
    params = [p for p in engine.module.parameters() if p.requires_grad]
    max_norm = float(engine.gradient_clipping())

    def clip_fp32_gradients() -> None:
        grads = [p for p in params if p.grad is not None]
        if grads:
            torch.nn.utils.clip_grad_norm_(grads, max_norm, foreach=True)

    engine.clip_fp32_gradients = clip_fp32_gradients
    return True


# ---- partition maps --------------------------------------------------------------------------------------------
def flat_partitions(engine) -> tuple[list[tuple[torch.Tensor, FlatPieces]], object]:
    """The flat tensors DeepSpeed's wrapper hands the client optimizer in place of parameters, each with the pieces
    of parameters it holds, and the process group whose ranks hold the other pieces. ([], None) when the client
    optimizer sees whole parameters (ZeRO-0 in fp32, or bf16/fp16 through DeepSpeed's unfused wrapper).
    Parameter ids are positions in DeepSpeed's group lists, the same on every rank. Each map is checked against the
    data once (the fp32 pieces equal the low-precision weights they were copied from); a layout this code does not
    know raises ConfigError."""
    import torch.distributed as dist

    opt, kind = engine.optimizer, type(engine.optimizer).__name__
    if opt is engine.basic_optimizer or kind == "FP16_UnfusedOptimizer":
        return [], None
    out = []
    if kind in ("DeepSpeedZeroOptimizer", "BF16_Optimizer"):  # ZeRO 1-2; bf16 ZeRO-1 with fp32 accumulation
        lp_groups = opt.bit16_groups if kind == "DeepSpeedZeroOptimizer" else opt.bf16_groups
        flats = opt.single_partition_of_fp32_groups if kind == "DeepSpeedZeroOptimizer" else \
            opt.fp32_groups_flat_partition
        groups = opt.real_dp_process_group
        for params, flat in zip(lp_groups, flats):
            starts, numels, ids = [], [], []
            for j, p in enumerate(params):
                mapping = getattr(p, "_hp_mapping", None)
                if mapping is None:  # no piece of this parameter in this rank's partition
                    continue
                address = mapping.hp_fragment_address
                _check_piece(flat, address.start, address.numel, mapping.lp_fragment, kind)
                starts.append(address.start), numels.append(address.numel), ids.append(j)
            out.append((flat, FlatPieces(tuple(starts), tuple(numels), tuple(ids), len(params))))
    elif kind == "DeepSpeedZeroOptimizer_Stage3":
        groups = opt.sub_group_process_groups
        for params, flat, group in zip(opt.fp16_groups, opt.fp32_partitioned_groups_flat, groups):
            rank, offset = dist.get_rank(group=group), 0
            starts, numels, ids = [], [], []
            for j, p in enumerate(params):
                size = p.partition_numel()  # every rank holds ceil(numel / world) elements, the last ones padded
                real = max(0, min(size, p.ds_numel - rank * size))
                if real:
                    _check_piece(flat, offset, real, p.ds_tensor.reshape(-1)[:real], kind)
                    starts.append(offset), numels.append(real), ids.append(j)
                offset += size
            if offset != flat.numel():
                raise ConfigError(f"DeepSpeed {kind}: a flat partition holds {flat.numel()} elements, its "
                                  f"parameters' partitions {offset}; this DeepSpeed version's layout is not known")
            out.append((flat, FlatPieces(tuple(starts), tuple(numels), tuple(ids), len(params))))
    else:
        raise ConfigError(f"DeepSpeed wraps the optimizer in {kind}, whose flat layout engine/deepspeed.py does not "
                          f"know; LAMB needs per-parameter norms (use --optimizer adamw or another ZeRO stage)")
    if len({id(g) for g in groups}) > 1:
        raise ConfigError("LAMB under ZeRO with several data-parallel groups (expert / sequence parallelism) is not "
                          "supported")
    return out, groups[0]


def _check_piece(flat: torch.Tensor, start: int, numel: int, lp: torch.Tensor, kind: str) -> None:
    if start + numel > flat.numel() or not torch.equal(flat.narrow(0, start, numel), lp.reshape(-1).to(flat.dtype)):
        raise ConfigError(f"DeepSpeed {kind}: the partition map does not match the fp32 partition (elements "
                          f"{start}..{start + numel}); this DeepSpeed version's layout is not known")


def loss_scale(engine) -> float:
    opt = engine.optimizer
    for name in ("cur_scale", "loss_scale"):
        value = getattr(opt, name, None)
        if isinstance(value, (int, float, torch.Tensor)):
            return float(value)
    return 1.0


def grad_norm(engine) -> float | None:
    value = engine.get_global_grad_norm()
    if value is None:
        return None
    return float(value)


def grad_norm_before_step(engine) -> float | None:
    """ZeRO-0 fp32 clips without recording the norm: take it from the (already all-reduced) full gradients at the
    accumulation boundary, before engine.step() clears them. None where DeepSpeed records it itself."""
    if engine.zero_optimization_stage() > 0 or engine.bfloat16_enabled() or engine.fp16_enabled():
        return None
    grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
    if not grads:
        return None
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))


def save(engine, root: str | Path, tag: str) -> None:
    """Every rank writes its shards to root/tag (collective). The model states carry DeepSpeed's universal-checkpoint
    version, which its converter (`to_universal`) requires."""
    from deepspeed.checkpoint.constants import (UNIVERSAL_CHECKPOINT_INFO, UNIVERSAL_CHECKPOINT_VERSION_KEY,
                                                UNIVERSAL_CHECKPOINT_VERSION_VALUE)

    info = {UNIVERSAL_CHECKPOINT_INFO: {UNIVERSAL_CHECKPOINT_VERSION_KEY: UNIVERSAL_CHECKPOINT_VERSION_VALUE}}
    engine.save_checkpoint(str(root), tag=tag, client_state=info, save_latest=False)


def to_universal(ckpt_dir: str | Path, out_dir: str | Path, workers: int = 2) -> None:
    """Convert a ZeRO 1-3 checkpoint folder (root/tag of `save`) into DeepSpeed's universal checkpoint in `out_dir`
    (per-parameter fp32 weights and optimizer moments, loadable by any number of ranks and any ZeRO 1-3 partitioning:
    deepspeed/checkpoint/ds_to_universal.py, run in a child process). Raises CheckpointError with the converter's
    last line on failure."""
    import subprocess
    import sys

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(ckpt_dir),
           "--output_folder", str(out_dir), "--inject_missing_state", "--num_extract_workers", str(workers),
           "--num_merge_workers", str(workers)]
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env.setdefault("DS_ACCELERATOR", "cpu")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    (out_dir / "conversion.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0 or not (out_dir / "zero").is_dir():
        last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["no output"])[-1]
        raise CheckpointError(f"{ckpt_dir}: conversion to a universal checkpoint failed ({last}); full log in "
                              f"{out_dir / 'conversion.log'}")


def load(engine, root: str | Path, tag: str, module_only: bool = False) -> None:
    """Restore the engine from root/tag (collective). Two repairs after DeepSpeed's ZeRO-3 universal loader (engine
    built with load_universal), which (a) copies parameter group 0's hyperparameters (e.g. its weight decay) into
    every group: each group's own are kept, except the learning rate, which is the checkpoint's; (b) gives every
    flat partition the same 'step' tensor, which torch's Adam(W) then advances once per partition per step: each
    gets its own copy."""
    groups = engine.basic_optimizer.param_groups
    kept = [{k: v for k, v in g.items() if k not in ("params", "lr")} for g in groups]
    path, _ = engine.load_checkpoint(str(root), tag=tag, load_optimizer_states=not module_only,
                                     load_lr_scheduler_states=False, load_module_only=module_only)
    if path is None:
        raise ConfigError(f"{Path(root) / tag}: DeepSpeed could not load this checkpoint")
    if engine.load_universal_checkpoint():
        for group, hyper in zip(groups, kept):
            group.update(hyper)
        for state in engine.basic_optimizer.state.values():
            if isinstance(state.get("step"), torch.Tensor):
                state["step"] = state["step"].clone()


def consolidated_fp32_state_dict(checkpoint_dir: str | Path) -> dict[str, torch.Tensor]:
    """One fp32 state dict (our parameter names) from a checkpoint directory written by `save` (root/tag): the fp32
    master weights gathered from ZeRO 1-3 shards, or the module weights of a ZeRO-0 checkpoint."""
    checkpoint_dir = Path(checkpoint_dir)
    root, tag = checkpoint_dir.parent, checkpoint_dir.name
    if not any(checkpoint_dir.glob("*model_states.pt")):
        raise ConfigError(f"{checkpoint_dir}: not a DeepSpeed checkpoint (no *model_states.pt)")
    if any(checkpoint_dir.glob("*optim_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        try:
            with quiet_deepspeed():  # its progress lines are bare prints to stdout
                state = get_fp32_state_dict_from_zero_checkpoint(str(root), tag=tag)
            return {k: v.float() for k, v in state.items()}
        except (ValueError, KeyError, AssertionError):
            pass  # a ZeRO-0 checkpoint has full optimizer states but no partitions: use the module weights
    files = sorted(checkpoint_dir.glob("mp_rank_*_model_states.pt"))
    state = load_state_file(files[0])["module"]  # weights_only=True (bertforge.hf.load_state_file)
    return {k: v.float() for k, v in state.items()}
