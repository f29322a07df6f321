"""Embedding lookup on CPU tensors whose weight gradient reuses one (V, h) buffer across steps: the 'none' backend's
`ops.embedding` (pure torch, no Triton).

Same result as `F.embedding(ids, weight, padding_idx)`: forward `weight[ids]`, backward the dense (V, h) gradient
with each looked-up row's output gradient summed into its row and the padding row left zero. torch's
`embedding_dense_backward` zero-fills a fresh (V, h) tensor every step; at V 30,522 x h 384 fp32 (47 MB, above
glibc's mmap threshold) the fill faults every page in again (16 ms on the 2-core development CPU against 1.2 ms
on memory already touched). Here the gradient lives on `ReusedBuffer` memory (kernels/host_buffers.py), handed to
autograd, reused once every reference to it is gone. fp32 weights only (fp32 training and autocast): for bf16 /
fp16 weights torch accumulates the rows in fp32 and rounds once, where index_add_ would round every add. Off CPU,
for other dtypes, under torch.compile, without a gradient to compute or with reuse switched off
(`host_buffers.reuse(False)`) this is `F.embedding`. When the weight is also the MLM decoder's (BERT's tie), the
backward adds its rows into the decoder's gradient instead (kernels/tied_grad.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bertforge.kernels import tied_grad
from bertforge.kernels.host_buffers import ReusedBuffer, reusing

_WEIGHT_GRAD = ReusedBuffer()


def embedding_cpu(ids: torch.Tensor, weight: torch.Tensor, padding_idx: int | None = None) -> torch.Tensor:
    """ids (...) int64 in [0, V); weight (V, h) -> (..., h), rows of weight (a copy). padding_idx: the row whose
    gradient stays zero (nn.Embedding's), None for none."""
    if (ids.device.type != "cpu" or weight.dtype != torch.float32 or torch.compiler.is_compiling()
            or not weight.requires_grad or not torch.is_grad_enabled() or not reusing()):
        return F.embedding(ids, weight, padding_idx)
    return _EmbeddingCPU.apply(ids, weight, padding_idx, tied_grad.offer(weight))


class _EmbeddingCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ids, weight, padding_idx, handoff):
        ctx.save_for_backward(ids)
        ctx.shape, ctx.padding_idx, ctx.handoff = weight.shape, padding_idx, handoff
        return F.embedding(ids, weight.detach())

    @staticmethod
    def backward(ctx, grad_out):
        (ids,) = ctx.saved_tensors
        flat_ids, rows = ids.reshape(-1), grad_out.reshape(-1, ctx.shape[1])
        if ctx.padding_idx is not None:
            keep = flat_ids != ctx.padding_idx
            if not bool(keep.all()):
                flat_ids, rows = flat_ids[keep], rows[keep]
        grad = tied_grad.collect(ctx.handoff)  # the tied decoder's gradient, to add into, or None
        if grad is None:
            grad = _WEIGHT_GRAD.take(tuple(ctx.shape), grad_out.dtype).zero_()
        grad.index_add_(0, flat_ids, rows.to(grad.dtype))
        return None, grad, None, None
