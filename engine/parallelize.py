"""The one place that wraps a model for training: precision, distribution, compilation, activation checkpointing.

Model code (engine/model.py, engine/heads.py) knows nothing of any of these; `parallelize` applies them from outside
in one commented order (torchtitan's `parallelize_*` functions are the model) and returns the training engine that
pretraining — and every other training loop — calls: `engine(**inputs)`, `engine.backward(loss)`, `engine.step()`.
Each `apply_*` is small and logs one line on rank 0."""
from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from bertforge import deepspeed as ds
from bertforge.distributed import log0
from bertforge.errors import ConfigError
from bertforge.kernels import reference
from bertforge.kernels._common import is_interpreting
from bertforge.optim import Lamb


def check_device_support(precision: str, kernels: str) -> None:
    """ConfigError for settings this machine cannot run: fp16 and Triton kernels need a GPU (kernels run on CPU
    tensors only under the Triton interpreter, TRITON_INTERPRET=1)."""
    if torch.cuda.is_available():
        return
    if precision == "fp16":
        raise ConfigError("--precision fp16 needs a GPU (no fp16 training or autocast on CPU); use bf16 or fp32")
    if kernels == "triton" and not is_interpreting():
        raise ConfigError("--kernels triton needs a GPU (on CPU only under the Triton interpreter: set "
                          "TRITON_INTERPRET=1, slow); use --kernels none here")


@dataclass(frozen=True)
class ParallelPlan:
    """What `parallelize` applies. ds_config: DeepSpeed's JSON (bertforge.deepspeed.build_ds_config), which carries
    ZeRO stage, precision, batch sizes, accumulation and clipping."""

    ds_config: dict
    compile: bool = False              # torch.compile (dynamic shapes) of the model, in place
    activation_checkpointing: bool = False  # recompute each encoder layer in the backward


def apply_activation_checkpointing(model: nn.Module, layer_type: type | None = None) -> int:
    """Recompute the activations of every `layer_type` module (default: bertforge.model.BertLayer) in the backward
    instead of storing them (torch.utils.checkpoint, non-reentrant), in training mode only. Parameter names are
    unchanged (the layer's forward is wrapped in place). Returns the number of wrapped layers."""
    if layer_type is None:
        from bertforge.model import BertLayer

        layer_type = BertLayer
    count = 0
    for module in model.modules():
        if not isinstance(module, layer_type) or getattr(module, "activation_checkpointed", False):
            continue
        inner: Callable = module.forward

        def forward(self, *args, _inner=inner, **kwargs):
            if self.training and torch.is_grad_enabled():
                return torch.utils.checkpoint.checkpoint(_inner, *args, use_reentrant=False, **kwargs)
            return _inner(*args, **kwargs)

        module.forward = types.MethodType(forward, module)
        module.activation_checkpointed = True
        count += 1
    return count


def apply_native_cpu() -> None:
    """The CPU path's native helpers (bertforge.csrc): dropout masks from the kernels' Philox streams computed in C++,
    whole rows at a time (vectorised: ~5x the per-call C++ path and ~100x the torch replay in
    bertforge.kernels.reference, which stays the oracle, bit for bit: the masks are the same either way, only their
    cost changes). Imported here, not at module import: the GPU path never draws them, and a machine that only runs
    it needs no built extension."""
    from bertforge import csrc

    reference.use_native_philox(csrc.philox_words, csrc.philox_keep, csrc.philox_keep_rows,
                                csrc.philox_multiplier_rows)


def apply_compile(model: nn.Module) -> None:
    """torch.compile the model in place (dynamic shapes): parameter names (checkpoints, export) stay the model's.
    With kernels='triton' every kernel is a custom op, so the forward is one graph without host syncs."""
    model.compile(dynamic=True)


class SkipGate:
    """The loop's veto of the next update (a non-finite loss on any rank): `gate.skip = True` before engine.step().
    DeepSpeed's wrappers (ZeRO 1-3, bf16) all call the client optimizer's step(), which asks the gate first, so a
    vetoed step leaves weights and moments untouched whatever the stage. `parallelize` returns it beside the engine."""

    def __init__(self):
        self.skip = False

    def install(self, optimizer: torch.optim.Optimizer) -> "SkipGate":
        """Route `optimizer.step` through this gate (a bound method: LR schedulers wrap it again)."""
        inner_step, gate = optimizer.step, self

        def step(self, *args, **kwargs):
            if gate.skip:
                return None
            return inner_step(*args, **kwargs)

        optimizer.step = types.MethodType(step, optimizer)
        return self


def apply_lamb_partitions(engine, optimizer: torch.optim.Optimizer) -> int:
    """LAMB under a wrapper that hands it flat partitions (ZeRO 1-3, bf16 ZeRO-1): register each flat tensor with
    where its parameters lie (bertforge.deepspeed.flat_partitions) and an all-reduce over the ranks that share them, so
    that its trust ratios are per parameter. Returns the number of flat tensors registered (0: it sees whole
    parameters, nothing to do)."""
    if not isinstance(optimizer, Lamb):
        return 0
    flats, group = ds.flat_partitions(engine)
    reduce = None
    if flats and dist.is_available() and dist.is_initialized() and dist.get_world_size(group=group) > 1:
        def reduce(t: torch.Tensor, _group=group) -> None:
            dist.all_reduce(t, group=_group)
    for flat, pieces in flats:
        optimizer.shard(flat, pieces, reduce)
    return len(flats)


def parallelize(model: nn.Module, optimizer: torch.optim.Optimizer, plan: ParallelPlan,
                log: Callable[[str], None] = log0) -> tuple[object, SkipGate]:
    """Wrap `model` (already on its device) and its client `optimizer` into the DeepSpeed training engine, in order:
    0. CPU: dropout masks from the C++ Philox (apply_native_cpu),
    1. activation checkpointing (before compile, so the compiled graph contains the recomputation),
    2. torch.compile (in place; ZeRO 0-2: ZeRO-3's parameter hooks are not traced),
    3. the non-finite-step gate on the client optimizer (DeepSpeed wraps it next),
    4. ZeRO-3: parameters a module reads from its children directly are registered to be gathered with it
       (inside bertforge.deepspeed.initialize),
    5. deepspeed.initialize: ZeRO partitioning, bf16/fp16 (dynamic loss scaling), accumulation, clipping,
    6. LAMB on flat partitions: per-parameter norms over each parameter's pieces and ranks (apply_lamb_partitions).
    The learning-rate schedule stays with the caller (it steps only when an update was applied); build it on the client
    optimizer after this returns (torch's schedulers wrap `optimizer.step` to check the call order, and step 3
    replaces it). Returns (the engine, the skip gate on its client optimizer)."""
    if next(model.parameters()).device.type == "cpu":
        apply_native_cpu()
    if plan.activation_checkpointing:
        log(f"parallelize: activation checkpointing on {apply_activation_checkpointing(model)} layers")
    if plan.compile:
        apply_compile(model)
        log("parallelize: torch.compile (dynamic shapes)")
    gate = SkipGate().install(optimizer)
    engine = ds.initialize(model, optimizer, plan.ds_config)
    zero = plan.ds_config["zero_optimization"].get("stage", 0)
    precision = "bf16" if plan.ds_config["bf16"]["enabled"] else "fp16" if plan.ds_config["fp16"]["enabled"] else "fp32"
    log(f"parallelize: DeepSpeed engine, ZeRO {zero}, {precision}, "
        f"accumulation {plan.ds_config['gradient_accumulation_steps']}")
    flats = apply_lamb_partitions(engine, optimizer)
    if flats:
        log(f"parallelize: LAMB norms per parameter over {flats} flat partition(s)")
    return engine, gate
