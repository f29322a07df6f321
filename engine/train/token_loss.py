"""Accumulation-invariant token-level losses (NER / per-word tags, domain MLM, pretraining MLM).

One optimizer step sees `accum` micro batches on each of `world` ranks. A token-level loss averaged per micro batch
and then averaged over micro batches weights a token by 1 / (labelled tokens of its micro batch): the update then
depends on how the global batch is cut (--micro-batch, ranks) although --global-batch is fixed. The fix (the
Hugging Face Trainer's num_items_in_batch, transformers 4.46, 2024): count the labelled tokens N of the whole step
over its micro batches and ranks first, give every micro batch the loss sum(its token losses) / N, and undo the
engine's own averaging. DeepSpeed divides each micro-batch loss by `accum` before backward (scale_wrt_gas) and
averages gradients over the ranks, so the loss handed to `engine.backward` is multiplied by accum * world
(`backward_scale`); the step's gradient is then that of sum(all token losses) / N, and the reported loss
(the engine-facing losses summed and divided by accum * world, as the trainers already do) is the same global
mean. Sequence-level losses (classification, NSP / SOP) keep their per-micro-batch mean: every micro batch holds
the same number of sequences, so the mean of the means is the step's mean. A class-weighted classification loss
(--class-weight) is a weighted mean, sum_i w[y_i] nll_i / sum_i w[y_i], whose normaliser differs between micro
batches: it takes the same route with N = the step's summed label weights (`step_num_items(..., weights=w)`).

Call sites (one line each in a trainer's step): `n = step_num_items([labels of each micro batch], device)` before
the first forward of the step; the model's forward gets `num_items_in_batch=n`; the loss passed to backward is
`loss * backward_scale(accum, world)`."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.distributed as dist

IGNORE_INDEX = -100


def labelled_tokens(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> int:
    """Tokens of one micro batch that carry a label (labels != ignore_index)."""
    return int((labels != ignore_index).sum())


def step_num_items(micro_labels: Iterable[torch.Tensor], device: torch.device | str = "cpu",
                   ignore_index: int = IGNORE_INDEX, weights: Sequence[float] | None = None) -> int | float:
    """Labelled tokens of one optimizer step: summed over this rank's micro batches, then over the ranks (one
    all-reduce when a process group is up). At least 1 (a step without labelled tokens contributes 0 / 1).
    `weights` (C,): per-class weights of a weighted loss; the step's summed weight of its labels instead (a float
    in float64; 1.0 when it is 0)."""
    if weights is None:
        local = sum(labelled_tokens(x, ignore_index) for x in micro_labels)
    else:
        w = torch.tensor(weights, dtype=torch.float64)
        local = sum(float(w[x[x != ignore_index].cpu()].sum()) for x in micro_labels)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([local], dtype=torch.int64 if weights is None else torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        local = t.item()
    if weights is None:
        return max(int(local), 1)
    return float(local) if local > 0 else 1.0


def backward_scale(accum: int, world: int) -> int:
    """Factor for the loss given to DeepSpeed's engine.backward, which divides by the gradient accumulation steps
    and averages over data-parallel ranks: with it, the step's gradient is d(sum of token losses / N)."""
    return accum * world


def step_num_items_on_device(micro_labels: Iterable[torch.Tensor], device: torch.device | str) -> torch.Tensor:
    """As step_num_items, without reading the device: a () float32 tensor on `device` (the all-reduce is queued on
    it), for a step whose only host sync must stay the non-finite check (pretraining)."""
    local = torch.zeros((), dtype=torch.float32, device=device)
    for labels in micro_labels:
        local += (labels != IGNORE_INDEX).sum()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(local, op=dist.ReduceOp.SUM)
    return local.clamp_min(1.0)
