"""Optimizers and learning-rate schedules shared by pretraining and finetuning.

- `param_groups`: weight decay on weights only — never on biases or LayerNorm parameters (BERT's recipe).
- `Lamb`: LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning", Algorithm 2). The step runs through
  engine.ops.lamb_step: `kernels.reference.lamb_step_ref` (pure torch, used on CPU) or `kernels.lamb.fused_lamb_step`
  (multi-tensor Triton launches, used on CUDA; imported only then), so there is exactly one definition of the update.
- `warmup_decay`: linear warmup then linear or polynomial decay to zero (BERT uses polynomial with power 1.0)."""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from engine import ops

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


class Lamb(torch.optim.Optimizer):
    """LAMB with Adam moments, bias correction and a layer-wise trust ratio ||x|| / ||r + wd x|| (clamped to
    max_trust_ratio; 1 where either norm is 0). use_fused=None picks the Triton kernel on CUDA tensors."""

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

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError("Lamb does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
            step = self.state[params[0]]["step"]
            fused = self.use_fused if self.use_fused is not None else params[0].is_cuda
            beta1, beta2 = group["betas"]
            ops.lamb_step([p for p in params], [p.grad for p in params], [self.state[p]["exp_avg"] for p in params],
                          [self.state[p]["exp_avg_sq"] for p in params], lr=group["lr"], beta1=beta1, beta2=beta2,
                          eps=group["eps"], weight_decay=group["weight_decay"], step=step,
                          bias_correction=group["bias_correction"], max_trust_ratio=group["max_trust_ratio"],
                          backend="triton" if fused else "none")
        return loss


def build_optimizer(name: str, groups: list[dict], lr: float, betas=(0.9, 0.999), eps: float = 1e-6,
                    fused: bool | None = None) -> torch.optim.Optimizer:
    """'adamw' (torch, fused on CUDA) or 'lamb' (ours). eps 1e-6 as in BERT."""
    if name == "adamw":
        if fused is None:
            fused = all(p.is_cuda for g in groups for p in g["params"]) and any(g["params"] for g in groups)
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=bool(fused))
    if name == "lamb":
        return Lamb(groups, lr=lr, betas=betas, eps=eps, use_fused=fused)
    raise ValueError(f"unknown optimizer {name!r}; choose adamw or lamb")


def warmup_decay(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, decay: str = "linear",
                 power: float = 1.0, min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """lr(step) = base * step/warmup during warmup, then decays to base*min_ratio at total_steps:
    'linear', 'poly' ((1 - progress) ** power), 'cosine', or 'constant'."""
    if total_steps <= 0 or warmup_steps < 0 or warmup_steps > total_steps:
        raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps ({total_steps}) and total > 0")
    if decay not in ("linear", "poly", "cosine", "constant"):
        raise ValueError(f"unknown decay {decay!r}; choose linear, poly, cosine or constant")

    def factor(step: int) -> float:
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

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
