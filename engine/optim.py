"""Optimizers and learning-rate schedules shared by pretraining and finetuning.

- `param_groups`: weight decay on weights only — never on biases or LayerNorm parameters (BERT's recipe).
- `layerwise_param_groups`: the same, split by depth with layer-wise learning-rate decay (ELECTRA / DeBERTa).
- `Lamb`: LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning", Algorithm 2). The step over whole
  parameters runs through bertforge.ops.lamb_step: `bertforge.kernels.reference.lamb_step_ref` (pure torch, used on CPU) or
  `bertforge.kernels.lamb.fused_lamb_step` (multi-tensor Triton launches, used on CUDA; imported only then).
  Under ZeRO 1-3 DeepSpeed hands the optimizer flat fp32 partitions instead of parameters; `Lamb.shard` tells it
  where each parameter's pieces lie in them (`FlatPieces`, built by engine/deepspeed.py), and the step then takes each
  parameter's ||x|| and ||u|| as segment sums of squares over its pieces, summed over ranks by one all-reduce per
  step call, so the trust ratios equal unsharded LAMB's (apex's DistributedFusedLAMB, used in NVIDIA's MLPerf BERT,
  does the same).
  That path is elementwise torch on the whole partition plus foreach norms over the pieces (`_step_pieces`); the
  tests check it against the per-parameter path on awkward piece layouts.
- `warmup_decay`: linear warmup then linear or polynomial decay to zero (BERT uses polynomial with power 1.0);
  `schedule_factor` its rate per step, `sync_lr` the optimizer's rate set from it (a resume)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from bertforge import ops
from bertforge.kernels.reference import lamb_bias_corrections

NO_DECAY_SUFFIXES = ("bias", "LayerNorm.weight", "LayerNorm.bias")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights and undecayed biases/LayerNorm parameters. Tied parameters appear once."""
    decay, no_decay, seen = [], [], set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if name.endswith(NO_DECAY_SUFFIXES) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def layer_depth(name: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise learning-rate decay: 0 for the embeddings, l + 1 for encoder layer l
    (`...encoder.layer.<l>....`), num_layers + 1 for everything above the encoder (pooler, heads)."""
    if ".embeddings." in f".{name}":
        return 0
    marker = "encoder.layer."
    at = name.find(marker)
    if at >= 0:
        return int(name[at + len(marker):].split(".", 1)[0]) + 1
    return num_layers + 1


def layerwise_param_groups(model: nn.Module, weight_decay: float, lr: float, decay: float | None = 1.0,
                           num_layers: int | None = None, head_lr_scale: float | None = 1.0) -> list[dict]:
    """`param_groups` split by depth with layer-wise learning-rate decay (ELECTRA, Clark et al. 2020, appendix;
    DeBERTa's finetuning): a parameter at depth d (`layer_depth`) trains at lr x decay^(num_layers + 1 - d), so
    encoder layer l (0-based) gets lr x decay^(num_layers - l), the embeddings lr x decay^(num_layers + 1), and the
    head and pooler (depth num_layers + 1) lr x head_lr_scale (a freshly initialised head needs larger steps than
    pretrained weights: discriminative learning rates, Howard & Ruder 2018). Groups carry their own 'lr'
    (schedules scale each group's initial lr), the deepest (head) first, then downwards, each split into decayed /
    undecayed parameters (empty groups dropped). decay and head_lr_scale both None or 1 give `param_groups` (two
    groups, no per-group lr). `num_layers`: default model.config.num_hidden_layers. ValueError on a decay outside
    (0, 1] or a scale <= 0."""
    decay = 1.0 if decay is None else decay
    head_lr_scale = 1.0 if head_lr_scale is None else head_lr_scale
    if decay == 1.0 and head_lr_scale == 1.0:
        return param_groups(model, weight_decay)
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"layer-wise lr decay must lie in (0, 1], got {decay}")
    if not head_lr_scale > 0.0:
        raise ValueError(f"head lr scale must be > 0, got {head_lr_scale}")
    if num_layers is None:
        num_layers = model.config.num_hidden_layers
    groups: dict[tuple[int, bool], list] = {}
    seen = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        key = (layer_depth(name, num_layers), not name.endswith(NO_DECAY_SUFFIXES))
        groups.setdefault(key, []).append(p)
    out = []
    for (depth, decayed), params in sorted(groups.items(), key=lambda kv: (-kv[0][0], not kv[0][1])):
        scale = head_lr_scale if depth == num_layers + 1 else decay ** (num_layers + 1 - depth)
        out.append({"params": params, "weight_decay": weight_decay if decayed else 0.0, "lr": lr * scale})
    return out


@dataclass(frozen=True)
class FlatPieces:
    """Where parameters lie inside one flat tensor that the optimizer steps (a ZeRO partition of fp32 master
    weights). Piece i is elements [starts[i], starts[i] + numels[i]) of the flat tensor and belongs to parameter
    param_ids[i] of `num_params`; the ids are shared by every rank's partition of the same parameters (a parameter
    may be split over several ranks). Elements outside every piece are padding and are never updated."""

    starts: tuple[int, ...]
    numels: tuple[int, ...]
    param_ids: tuple[int, ...]
    num_params: int

    def __post_init__(self) -> None:
        if not len(self.starts) == len(self.numels) == len(self.param_ids):
            raise ValueError("FlatPieces: starts, numels and param_ids differ in length")
        if any(n <= 0 for n in self.numels) or any(not 0 <= i < self.num_params for i in self.param_ids):
            raise ValueError(f"FlatPieces: empty piece or parameter id outside [0, {self.num_params})")

    def end(self) -> int:
        """One past the last element any piece covers (0 without pieces)."""
        return max((s + n for s, n in zip(self.starts, self.numels)), default=0)


class Lamb(torch.optim.Optimizer):
    """LAMB with Adam moments, bias correction and a layer-wise trust ratio ||x|| / ||r + wd x|| (clamped to
    max_trust_ratio; 1 where either norm is 0). use_fused=None picks the Triton kernel on CUDA tensors.
    Flat partitions registered with `shard` get per-parameter norms over their pieces and over ranks."""

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.01, max_trust_ratio: float | None = 10.0,
                 bias_correction: bool = True, use_fused: bool | None = None):
        if lr < 0 or eps <= 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1) or weight_decay < 0:
            raise ValueError(f"invalid Lamb hyper-parameters: lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, max_trust_ratio=max_trust_ratio,
                        bias_correction=bias_correction)
        super().__init__(params, defaults)
        self.use_fused = use_fused
        self._pieces: dict[int, tuple[torch.Tensor, FlatPieces]] = {}  # id(flat) -> (flat, its pieces)
        self._all_reduce: Callable[[torch.Tensor], None] | None = None

    def shard(self, flat: torch.Tensor, pieces: FlatPieces,
              all_reduce: Callable[[torch.Tensor], None] | None = None) -> None:
        """Register a flat tensor that this optimizer will be handed instead of parameters (a ZeRO partition), with
        where the parameters lie in it. `all_reduce(t)` sums a float64 tensor in place over the ranks that share
        the parameters (None: one rank). Every rank must call step() with the same sequence of registered flats."""
        if flat.dim() != 1 or pieces.end() > flat.numel():
            raise ValueError(f"FlatPieces reach element {pieces.end()} of a flat tensor of shape "
                             f"{tuple(flat.shape)}")
        self._pieces[id(flat)] = (flat, pieces)
        self._all_reduce = all_reduce

    def _state(self, p: torch.Tensor) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        flats = []  # (flat, pieces, group) of registered partitions in this call, with or without a gradient
        for group in self.param_groups:
            flats += [(p, *self._pieces[id(p)][1:], group) for p in group["params"]
                      if id(p) in self._pieces and self._pieces[id(p)][0] is p]
            params = [p for p in group["params"] if p.grad is not None and id(p) not in self._pieces]
            if not params:
                continue
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError("Lamb does not support sparse gradients")
                self._state(p)["step"] += 1
            step = self.state[params[0]]["step"]
            fused = self.use_fused if self.use_fused is not None else params[0].is_cuda
            beta1, beta2 = group["betas"]
            ops.lamb_step([p for p in params], [p.grad for p in params], [self.state[p]["exp_avg"] for p in params],
                          [self.state[p]["exp_avg_sq"] for p in params], lr=group["lr"], beta1=beta1, beta2=beta2,
                          eps=group["eps"], weight_decay=group["weight_decay"], step=step,
                          bias_correction=group["bias_correction"], max_trust_ratio=group["max_trust_ratio"],
                          backend="triton" if fused else "none")
        if flats:
            self._step_pieces(flats)
        return loss

    def _step_pieces(self, flats: list) -> None:
        """One LAMB step on flat partitions: the elementwise part of bertforge.kernels.reference.lamb_step_ref on each whole
        flat tensor (padding gets moments too, but is never updated), then per-parameter sums of x^2 and u^2 over
        the pieces, one
        all-reduce (float64, (2, total parameters)) over the ranks, the trust ratios, and x += -lr ratio u on the
        pieces only. A flat without a gradient contributes zeros and is not updated."""
        updates, sums = [], []
        for flat, pieces, group in flats:
            u = None
            part = torch.zeros(2, pieces.num_params, dtype=torch.float64, device=flat.device)
            if flat.grad is not None:
                state = self._state(flat)
                state["step"] += 1
                beta1, beta2 = group["betas"]
                bc1, bc2 = lamb_bias_corrections(beta1, beta2, state["step"], group["bias_correction"])
                g = flat.grad.to(flat.dtype)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(g, 1.0 - beta1)  # m = beta1 m + (1 - beta1) g
                v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
                denom = (v / bc2).sqrt_().add_(group["eps"])  # sqrt(v_hat) + eps
                u = (m / bc1).div_(denom)  # r
                if group["weight_decay"] != 0.0:
                    u.add_(flat, alpha=group["weight_decay"])  # u = r + wd x
                if pieces.param_ids:
                    ids = torch.tensor(pieces.param_ids, device=flat.device)
                    sq = torch.stack([torch.stack(torch._foreach_norm(_views(t, pieces))) for t in (flat, u)])
                    part.index_add_(1, ids, sq.double() ** 2)
            updates.append(u)
            sums.append(part)
        total = torch.cat(sums, 1)  # (2, sum of num_params)
        if self._all_reduce is not None:
            self._all_reduce(total)
        offset = 0
        for (flat, pieces, group), u, part in zip(flats, updates, sums):
            w_sq, u_sq = total[:, offset:offset + pieces.num_params]
            offset += pieces.num_params
            if u is None or not pieces.param_ids:
                continue
            w_norm, u_norm = w_sq.sqrt(), u_sq.sqrt()
            ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
            if group["max_trust_ratio"] is not None:
                ratio = ratio.clamp_max(group["max_trust_ratio"])
            ids = torch.tensor(pieces.param_ids, device=flat.device)
            u_views = _views(u, pieces)
            torch._foreach_mul_(u_views, (-group["lr"] * ratio[ids]).to(flat.dtype).unbind(0))
            torch._foreach_add_(_views(flat, pieces), u_views)


def _views(flat: torch.Tensor, pieces: FlatPieces) -> list[torch.Tensor]:
    """The pieces of a flat tensor as views (same storage)."""
    return [flat.narrow(0, s, n) for s, n in zip(pieces.starts, pieces.numels)]


FUSED_ADAMW_DEVICES = ("cuda", "cpu")  # devices where torch.optim.AdamW(fused=True) has a kernel (torch >= 2.4)


def build_optimizer(name: str, groups: list[dict], lr: float, betas=(0.9, 0.999), eps: float = 1e-6,
                    fused: bool | None = None) -> torch.optim.Optimizer:
    """'adamw' (torch's) or 'lamb' (ours); eps 1e-6 as in BERT. AdamW: fused=None takes torch's fused kernel where
    every parameter lies on a device of FUSED_ADAMW_DEVICES (on CPU 3.7x the multi-tensor path, 12 vs 45 ms a step
    for the tiny preset; the same update up to fp32 rounding, not bit-equal: tests/test_optim.py measures it);
    fused=False the multi-tensor `foreach` path (bit-equal to the per-tensor loop)."""
    if name == "adamw":
        params = [p for g in groups for p in g["params"]]
        if fused is None:
            fused = bool(params) and all(p.device.type in FUSED_ADAMW_DEVICES and p.is_floating_point()
                                         for p in params)
        if fused:
            return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, foreach=True)
    if name == "lamb":
        return Lamb(groups, lr=lr, betas=betas, eps=eps, use_fused=fused)
    raise ValueError(f"unknown optimizer {name!r}; choose adamw or lamb")


def schedule_factor(step: int, warmup_steps: int, total_steps: int, decay: str = "linear", power: float = 1.0,
                    min_ratio: float = 0.0) -> float:
    """The learning rate of optimizer step `step` (0-based: the step about to be taken after `step` applied ones)
    as a fraction of the peak: (step + 1) / warmup during warmup, then from 1 down to min_ratio at total_steps:
    'linear' (1 - progress), 'poly' ((1 - progress) ** power; BERT's, power 1), 'cosine' (0.5 (1 + cos(pi
    progress))) or 'constant', with progress = (step - warmup) / (total - warmup) clamped to [0, 1]."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if decay == "linear":
        shape = 1.0 - progress
    elif decay == "poly":
        shape = (1.0 - progress) ** power
    else:
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * shape


def warmup_decay(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, decay: str = "linear",
                 power: float = 1.0, min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """lr(step) = base * schedule_factor(step, ...): linear warmup, then decay to base*min_ratio at total_steps:
    'linear', 'poly' ((1 - progress) ** power), 'cosine', or 'constant'."""
    if total_steps <= 0 or warmup_steps < 0 or warmup_steps > total_steps:
        raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps ({total_steps}) and total > 0")
    if decay not in ("linear", "poly", "cosine", "constant"):
        raise ValueError(f"unknown decay {decay!r}; choose linear, poly, cosine or constant")

    def factor(step: int) -> float:
        return schedule_factor(step, warmup_steps, total_steps, decay, power, min_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def sync_lr(scheduler: torch.optim.lr_scheduler.LambdaLR) -> list[float]:
    """Set every parameter group's learning rate to the value `scheduler` gives its current step, base_lr x
    lr_lambda(last_epoch) (the expression LambdaLR.step evaluates), and return those rates. For a resume: the
    optimizer state restored from a checkpoint carries the learning rate of the checkpoint's schedule (0 at the end
    of a finished run); after a deliberate change of the schedule (a longer run) the next step must take the new
    schedule's rate. Unchanged schedules get the value they already hold."""
    rates = [base * fn(scheduler.last_epoch) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, rate in zip(scheduler.optimizer.param_groups, rates):
        group["lr"] = rate
    scheduler._last_lr = list(rates)  # what get_last_lr() reports
    return rates
