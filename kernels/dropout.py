"""Dropout over the rows of an (n_rows, h) view with the post-LN epilogue's Philox rule (kernels/layer_norm.py), forward
and backward: the embeddings' dropout, so that every dropout site of the encoder can be keyed per sample.

With G = 16 (dropout_bits 8, the default) or 4 (24), element (r, j) is element j % G of the Philox-4x32-10 call with
the call's seed as key and counter (j // G, 0, row_id low, row_id high): byte j % 4 of word (j % 16) // 4 kept when
>= round(p * 256), or word j % 4 kept when its top 24 bits are >= round(p * 2^24); kept values are scaled by
1 / (1 - p_q), p_q = reference.quantized_dropout_p(p, dropout_bits). row_id is the row's index unless a (n_rows,)
int64 `row_ids` is given. `bertforge.kernels.reference.dropout_ref` (and `layer_norm_dropout_keep_ref`) replays it. No
mask is stored: the backward regenerates it from the same (1,) int64 seed tensor and row ids.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from bertforge.kernels._common import draw_seed_tensor
from bertforge.kernels.layer_norm import _blocks, _dropout_keep, _tile
from bertforge.kernels.reference import check_dropout_bits, dropout_scale, dropout_threshold


@triton.jit(do_not_specialize=["n_rows", "THRESH"])
def _dropout_kernel(
    X_ptr,  # (n_rows, n_cols) input (the forward's x, or the backward's dy)
    Y_ptr,  # (n_rows, n_cols) output, x's dtype
    SEED_ptr,  # (1,) int64 Philox key
    ROW_IDS_ptr,  # (n_rows,) int64 Philox row ids (read only if HAS_ROW_IDS)
    n_rows,
    n_cols,
    THRESH,  # dropout_threshold(p, dropout_bits)
    drop_scale,  # dropout_scale(p, dropout_bits) = 1 / (1 - p_q)
    HAS_ROW_IDS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_Q: tl.constexpr,  # next power of 2 of ceil(n_cols / DROP_GROUP)
    DROP_GROUP: tl.constexpr,  # columns per Philox call: 16 (8-bit thresholds) or 4 (24-bit)
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs, mask, _cols = _tile(rows, n_rows, n_cols, BLOCK_Q, DROP_GROUP)
    x = tl.load(X_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    keep = _dropout_keep(tl.load(SEED_ptr), rows, ROW_IDS_ptr, n_rows, THRESH, HAS_ROW_IDS, BLOCK_M, BLOCK_Q,
                         DROP_GROUP)
    tl.store(Y_ptr + offs, tl.where(keep, x * drop_scale, 0.0).to(Y_ptr.dtype.element_ty), mask=mask)


def dropout_apply(x: torch.Tensor, p: float, seed: torch.Tensor, row_ids: torch.Tensor | None = None,
                  dropout_bits: int = 8) -> torch.Tensor:
    """The mask of (seed, row_ids) applied to x (..., h) (forward and backward alike). seed: (1,) int64 on x's
    device; row_ids: None or (n_rows,) int64; dropout_bits 8 or 24."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"dropout: p must be in (0, 1) here, got {p}")
    h = x.shape[-1]
    x2 = x.reshape(-1, h).contiguous()  # (n_rows, h)
    n_rows = x2.shape[0]
    if seed.shape != (1,) or seed.dtype != torch.int64:
        raise ValueError(f"dropout: seed must be a (1,) int64 tensor, got {tuple(seed.shape)} {seed.dtype}")
    if row_ids is not None and (row_ids.shape != (n_rows,) or row_ids.dtype != torch.int64):
        raise ValueError(f"dropout: row_ids must be ({n_rows},) int64, got {tuple(row_ids.shape)} {row_ids.dtype}")
    rows = row_ids.to(x.device).contiguous() if row_ids is not None else seed.new_zeros(1).to(x.device)
    y = torch.empty_like(x2)
    if n_rows and h:
        meta = _blocks(h, dropout_bits)
        _dropout_kernel[(triton.cdiv(n_rows, meta["BLOCK_M"]),)](
            x2, y, seed.to(x.device), rows, n_rows, h, dropout_threshold(p, dropout_bits),
            dropout_scale(p, dropout_bits), HAS_ROW_IDS=row_ids is not None, **meta)
    return y.view(x.shape)


# A torch.library custom op (opaque to torch.compile); its backward is the same op on the gradient.
@torch.library.custom_op("bertforge::dropout", mutates_args=())
def _dropout_op(x: torch.Tensor, seed: torch.Tensor, row_ids: Optional[torch.Tensor], p: float,
                dropout_bits: int) -> torch.Tensor:
    return dropout_apply(x, p, seed, row_ids, dropout_bits)


@_dropout_op.register_fake
def _(x, seed, row_ids, p, dropout_bits):
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output):
    _, seed, row_ids, p, dropout_bits = inputs
    ctx.save_for_backward(seed, row_ids)
    ctx.p, ctx.dropout_bits = p, dropout_bits


def _backward(ctx, dy):
    seed, row_ids = ctx.saved_tensors
    return _dropout_op(dy, seed, row_ids, ctx.p, ctx.dropout_bits), None, None, None, None


_dropout_op.register_autograd(_backward, setup_context=_setup_context)


def dropout(x: torch.Tensor, p: float, seed: torch.Tensor | int | None = None,
            row_ids: torch.Tensor | None = None, dropout_bits: int = 8) -> torch.Tensor:
    """dropout(x) over the rows of x's (n_rows, h) view; p must already be 0 outside training (then x is returned).
    The probability applied is reference.quantized_dropout_p(p, dropout_bits) (0.1 -> 26/256 at 8 bits).
    seed: the Philox key, an int or a (1,) int64 tensor; by default drawn on x's device from torch's generator
    (reproducible under torch.manual_seed, no host sync). row_ids: (n_rows,) int64 row ids (default: row index).
    dropout_bits: 8 (16 elements a Philox call) or 24 (4)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if p == 0.0:
        return x
    if seed is None:
        seed = draw_seed_tensor(x.device)
    elif not isinstance(seed, torch.Tensor):
        seed = torch.tensor([seed], dtype=torch.int64, device=x.device)
    dropout_threshold(p, dropout_bits)  # refuses a p that keeps nothing, before the op is recorded
    return _dropout_op(x, seed, row_ids, float(p), check_dropout_bits(dropout_bits))
