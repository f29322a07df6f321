"""Evaluation sharded over the ranks, with every example scored exactly once and the result independent of the
number of ranks.

The features are sorted by length (stable) and cut into batches of `micro_batch` (little padding, and the same
batches whatever the rank count, so the numbers are identical to a single process'); batch b runs on rank
b % world. Every rank runs the same number of forwards — a rank without a batch in a round repeats the first batch
and drops its result — because under ZeRO-3 a forward gathers parameters collectively and a rank that stops early
would leave the others waiting. The per-example results (`task.outputs`) are gathered on every rank in input order,
so each rank computes the same metrics and takes the same best-checkpoint and early-stopping decisions."""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch

from bertforge import distributed as D
from bertforge.finetuning.tasks import feature_length


def to_device(batch: dict, dev: torch.device) -> dict:
    return {k: (v.to(dev, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def autocast(dev: torch.device, precision: str):
    """torch.autocast for 'bf16' / 'fp16' on `dev`, a null context for 'fp32' (inference of a plain model)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def length_batches(features: Sequence, micro_batch: int) -> list[list[int]]:
    """Indices of `features` in batches of `micro_batch`, shortest first (stable sort by length)."""
    order = sorted(range(len(features)), key=lambda i: feature_length(features[i]))
    return [order[k: k + micro_batch] for k in range(0, len(order), micro_batch)]


@torch.no_grad()
def sharded_outputs(model, task, features: Sequence, micro_batch: int, dev: torch.device, unpadded: bool = True,
                    precision: str = "fp32") -> list:
    """`task.outputs` of every feature, in input order, on every rank (a collective when ranks > 1). `model`: a
    DeepSpeed engine or a plain module (left in eval mode); `precision`: autocast of a plain module."""
    if not features:
        return []
    rank, world = D.rank(), D.world_size()
    batches = length_batches(features, micro_batch)
    mine = batches[rank::world]
    rounds = -(-len(batches) // world)
    model.eval()
    results: dict[int, object] = {}
    for r in range(rounds):
        idx = mine[r] if r < len(mine) else batches[0]  # the lockstep forward of a rank with no batch left
        batch = to_device(task.collate([features[i] for i in idx], unpadded=unpadded), dev)
        with autocast(dev, precision):
            outputs = task.outputs(model, batch)
        if r < len(mine):
            results.update(zip(idx, outputs))
    for part in D.all_gather_object(results) if world > 1 else ():
        results.update(part)
    return [results[i] for i in range(len(features))]


@torch.no_grad()
def local_outputs(model, task, features: Sequence, micro_batch: int, dev: torch.device, unpadded: bool = True,
                  precision: str = "fp32") -> list:
    """`task.outputs` of every feature in input order, all on this rank (no collective): inference over one rank's
    share of a file."""
    model.eval()
    results: dict[int, object] = {}
    for idx in length_batches(features, micro_batch):
        batch = to_device(task.collate([features[i] for i in idx], unpadded=unpadded), dev)
        with autocast(dev, precision):
            results.update(zip(idx, task.outputs(model, batch)))
    return [results[i] for i in range(len(features))]


def evaluate_split(model, task, split: str, micro_batch: int, dev: torch.device, unpadded: bool = True,
                   precision: str = "fp32") -> dict:
    """The task's metrics on `split` ('dev' / 'test'), sharded over the ranks."""
    outputs = sharded_outputs(model, task, getattr(task, split), micro_batch, dev, unpadded, precision)
    return task.metrics(split, outputs)
