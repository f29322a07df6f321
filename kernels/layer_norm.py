"""Fused post-LN epilogue: out = LayerNorm(residual + dropout(x + bias)) with fp32 statistics, forward and backward.

Used at both post-LN points of a BERT layer (after attention's output projection and after the FFN's second linear).

Dropout (bertforge.kernels.reference: Philox-4x32-10 with the call's seed as key): one Philox call with counter
(c, 0, row_id low, row_id high) serves the G adjacent columns G c .. G c + G - 1 of row r of the (n_rows, h) view;
dropout_bits 8 (default): G = 16, column 16c + t is byte t % 4 of word t // 4, kept when the byte is >= round(p * 256);
dropout_bits 24: G = 4, column 4c + w is word w, kept when its top 24 bits are >= round(p * 2^24). Kept values are
scaled by 1 / (1 - p_q), p_q the quantised probability (reference.quantized_dropout_p). A program holds its tile as
(BLOCK_M, BLOCK_Q, G) with column G c + t (kernels/_philox.py joins a call's flags along in-thread dimensions, and
a thread's G columns load as vectors). The seed is a (1,) int64 tensor on the device (drawn there from torch's
generator: no host sync, a fresh one under CUDA-graph replay, reproducible under torch.manual_seed); the backward reads the same
tensor, so no mask is stored. row_id is the row's index unless a (n_rows,) int64 `row_ids` is given (per-sample streams: a row's mask then
depends on its id, not on its place in the batch). `bertforge.kernels.reference.layer_norm_dropout_keep_ref` replays the mask.

Saved for backward: the pre-LN sum s = residual + dropout(x + bias) (n_rows, h) in x's dtype, the per-row fp32 mean
and rstd, and weight: x itself is not kept alive. Traffic per element: forward reads x, residual and writes out, s
(4 x dtype); backward reads dy, s and writes dx, dresidual (4). s is rounded to x's dtype before the statistics (as
plain torch does in low precision), so forward and backward see the same s. Offsets are int64: any number of rows.

The backward's reductions over rows (weight, ln_bias and bias gradients) go through per-program fp32 partials summed by
torch: deterministic, no atomics. Layout follows Liger-Kernel's layer_norm.py.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from bertforge.kernels._common import draw_seed_tensor, is_interpreting, next_power_of_2, num_sms
from bertforge.kernels._philox import keep_flags
from bertforge.kernels.reference import check_dropout_bits, dropout_group, dropout_scale, dropout_threshold


@triton.jit
def _tile(rows, n_rows, n_cols, BLOCK_Q: tl.constexpr, DROP_GROUP: tl.constexpr):
    """(int64 element offsets (BLOCK_M, BLOCK_Q, G), in-bounds mask, column indices (1, BLOCK_Q, G)) of a row tile,
    G = DROP_GROUP; element [m, c, t] is column G c + t of row rows[m] (G contiguous columns: vector loads)."""
    cols = (DROP_GROUP * tl.arange(0, BLOCK_Q)[:, None] + tl.arange(0, DROP_GROUP)[None, :])[None]  # (1, BLOCK_Q, G)
    row_off = rows.to(tl.int64)[:, None, None] * n_cols  # int64: n_rows * n_cols may pass 2^31
    mask = (rows[:, None, None] < n_rows) & (cols < n_cols)
    return row_off + cols, mask, cols


@triton.jit
def _dropout_keep(seed, rows, ROW_IDS_ptr, n_rows, THRESH, HAS_ROW_IDS: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_Q: tl.constexpr, DROP_GROUP: tl.constexpr):
    """Keep mask (BLOCK_M, BLOCK_Q, G) of these rows: columns G c .. G c + G - 1 <- Philox(c, 0, row id)."""
    if HAS_ROW_IDS:
        row_id = tl.load(ROW_IDS_ptr + rows, mask=rows < n_rows, other=0)
    else:
        row_id = rows.to(tl.int64)
    c0 = tl.zeros((BLOCK_M, BLOCK_Q), tl.uint32) + tl.arange(0, BLOCK_Q)[None, :].to(tl.uint32)
    lo = (row_id & 0xFFFFFFFF).to(tl.uint32)[:, None]
    hi = (row_id >> 32).to(tl.uint32)[:, None]
    r0, r1, r2, r3 = tl.philox(seed, c0, c0 * 0, c0 * 0 + lo, c0 * 0 + hi)
    return keep_flags(r0, r1, r2, r3, THRESH, BLOCK_M, BLOCK_Q, DROP_GROUP)


@triton.jit
def _sum_cols(x):
    """(BLOCK_M, BLOCK_Q, G) -> (BLOCK_M,)"""
    return tl.sum(tl.sum(x, axis=2), axis=1)


@triton.jit(do_not_specialize=["n_rows", "THRESH"])
def _bias_dropout_add_ln_fwd_kernel(
    X_ptr,  # (n_rows, n_cols) input of dropout (the linear's output without bias)
    BIAS_ptr,  # (n_cols,) the linear's bias
    RES_ptr,  # (n_rows, n_cols) residual stream
    W_ptr,  # (n_cols,) LayerNorm weight
    LNB_ptr,  # (n_cols,) LayerNorm bias
    Y_ptr,  # (n_rows, n_cols) output, x's dtype
    S_ptr,  # (n_rows, n_cols) pre-LN sum saved for backward (written only if STORE_SUM)
    MEAN_ptr,  # (n_rows,) fp32
    RSTD_ptr,  # (n_rows,) fp32
    SEED_ptr,  # (1,) int64 Philox key (read only if HAS_DROPOUT)
    ROW_IDS_ptr,  # (n_rows,) int64 Philox row ids (read only if HAS_ROW_IDS)
    n_rows,
    n_cols,
    eps,
    THRESH,  # dropout_threshold(p, dropout_bits)
    drop_scale,  # dropout_scale(p, dropout_bits) = 1 / (1 - p_q)
    HAS_DROPOUT: tl.constexpr,
    HAS_ROW_IDS: tl.constexpr,
    STORE_SUM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_Q: tl.constexpr,  # next power of 2 of ceil(n_cols / DROP_GROUP)
    DROP_GROUP: tl.constexpr,  # columns per Philox call: 16 (8-bit thresholds) or 4 (24-bit)
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs, mask, cols = _tile(rows, n_rows, n_cols, BLOCK_Q, DROP_GROUP)
    col_ok = cols < n_cols
    x = tl.load(X_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x += tl.load(BIAS_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    if HAS_DROPOUT:
        keep = _dropout_keep(tl.load(SEED_ptr), rows, ROW_IDS_ptr, n_rows, THRESH, HAS_ROW_IDS, BLOCK_M, BLOCK_Q,
                             DROP_GROUP)
        x = tl.where(keep, x * drop_scale, 0.0)
    s = x + tl.load(RES_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    s = s.to(S_ptr.dtype.element_ty)
    if STORE_SUM:
        tl.store(S_ptr + offs, s, mask=mask)
    s = tl.where(mask, s.to(tl.float32), 0.0)
    mean = _sum_cols(s) / n_cols  # (BLOCK_M,)
    d = tl.where(mask, s - mean[:, None, None], 0.0)
    rstd = 1.0 / tl.sqrt(_sum_cols(d * d) / n_cols + eps)
    w = tl.load(W_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    b = tl.load(LNB_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    y = d * rstd[:, None, None] * w + b
    tl.store(Y_ptr + offs, y.to(Y_ptr.dtype.element_ty), mask=mask)
    row_ok = rows < n_rows
    tl.store(MEAN_ptr + rows, mean, mask=row_ok)
    tl.store(RSTD_ptr + rows, rstd, mask=row_ok)


@triton.jit(do_not_specialize=["n_rows", "THRESH"])
def _bias_dropout_add_ln_bwd_kernel(
    DY_ptr,  # (n_rows, n_cols) upstream gradient
    S_ptr,  # (n_rows, n_cols) saved pre-LN sum
    W_ptr,  # (n_cols,) LayerNorm weight
    MEAN_ptr,  # (n_rows,) fp32
    RSTD_ptr,  # (n_rows,) fp32
    DX_ptr,  # (n_rows, n_cols) gradient of x
    DRES_ptr,  # (n_rows, n_cols) gradient of the residual
    DW_part_ptr,  # (n_programs, n_cols) fp32 partial sums of the LayerNorm weight gradient
    DLNB_part_ptr,  # (n_programs, n_cols) fp32 partial sums of the LayerNorm bias gradient
    DBIAS_part_ptr,  # (n_programs, n_cols) fp32 partial sums of the linear bias gradient
    SEED_ptr,  # (1,) int64, the forward's
    ROW_IDS_ptr,  # (n_rows,) int64, the forward's (HAS_ROW_IDS)
    n_rows,
    n_cols,
    THRESH,
    drop_scale,
    HAS_DROPOUT: tl.constexpr,
    HAS_ROW_IDS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    DROP_GROUP: tl.constexpr,
):
    pid = tl.program_id(0)
    n_progs = tl.num_programs(0)
    cols = _tile(tl.arange(0, BLOCK_M), n_rows, n_cols, BLOCK_Q, DROP_GROUP)[2]
    col_ok = cols < n_cols
    w = tl.load(W_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    dw_acc = tl.zeros((BLOCK_Q, DROP_GROUP), dtype=tl.float32)
    dlnb_acc = tl.zeros((BLOCK_Q, DROP_GROUP), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_Q, DROP_GROUP), dtype=tl.float32)
    if HAS_DROPOUT:
        seed = tl.load(SEED_ptr)
    for tile in range(pid, tl.cdiv(n_rows, BLOCK_M), n_progs):
        rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < n_rows
        offs, mask, _cols = _tile(rows, n_rows, n_cols, BLOCK_Q, DROP_GROUP)
        dy = tl.load(DY_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        s = tl.load(S_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(MEAN_ptr + rows, mask=row_ok, other=0.0)[:, None, None]
        rstd = tl.load(RSTD_ptr + rows, mask=row_ok, other=0.0)[:, None, None]
        xhat = tl.where(mask, (s - mean) * rstd, 0.0)
        g = dy * w
        c1 = (_sum_cols(xhat * g) / n_cols)[:, None, None]
        c2 = (_sum_cols(g) / n_cols)[:, None, None]
        ds = tl.where(mask, (g - xhat * c1 - c2) * rstd, 0.0)
        if HAS_DROPOUT:
            keep = _dropout_keep(seed, rows, ROW_IDS_ptr, n_rows, THRESH, HAS_ROW_IDS, BLOCK_M, BLOCK_Q, DROP_GROUP)
            dx = tl.where(keep, ds * drop_scale, 0.0)
        else:
            dx = ds
        tl.store(DRES_ptr + offs, ds.to(DRES_ptr.dtype.element_ty), mask=mask)
        tl.store(DX_ptr + offs, dx.to(DX_ptr.dtype.element_ty), mask=mask)
        dw_acc += tl.sum(dy * xhat, axis=0)
        dlnb_acc += tl.sum(dy, axis=0)
        dbias_acc += tl.sum(dx, axis=0)
    part = pid.to(tl.int64) * n_cols + cols.reshape(BLOCK_Q, DROP_GROUP)
    ok = col_ok.reshape(BLOCK_Q, DROP_GROUP)
    tl.store(DW_part_ptr + part, dw_acc, mask=ok)
    tl.store(DLNB_part_ptr + part, dlnb_acc, mask=ok)
    tl.store(DBIAS_part_ptr + part, dbias_acc, mask=ok)


def _blocks(n_cols: int, dropout_bits: int = 8) -> dict:
    """Launch meta of a row tile: BLOCK_M, BLOCK_Q, DROP_GROUP (G) and num_warps: whole rows as (BLOCK_Q, G) column
    tiles, ~4K elements a program (one larger tile under the interpreter)."""
    group = dropout_group(dropout_bits)
    block_q = next_power_of_2(triton.cdiv(n_cols, group))
    if group * block_q > 16384:
        raise ValueError(f"bias_dropout_add_layernorm: hidden size {n_cols} > 16384 is not supported")
    block_m = max(1, (16384 if is_interpreting() else 4096) // (group * block_q))
    return dict(BLOCK_M=block_m, BLOCK_Q=block_q, DROP_GROUP=group,
                num_warps=8 if block_m * block_q * group >= 4096 else 4)


def _dropout_args(dropout_p: float, seed: torch.Tensor, row_ids: torch.Tensor | None, n_rows: int, device,
                  dropout_bits: int = 8):
    """-> (seed (1,) int64 on device, row ids (n_rows,) int64 or a dummy, threshold, scale)."""
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"bias_dropout_add_layernorm: dropout_p must be in [0, 1), got {dropout_p}")
    if dropout_p == 0.0:
        dummy = torch.zeros(1, dtype=torch.int64, device=device)
        return dummy, dummy, 0, 1.0
    if seed.shape != (1,) or seed.dtype != torch.int64:
        raise ValueError(f"bias_dropout_add_layernorm: seed must be a (1,) int64 tensor, got {tuple(seed.shape)} "
                         f"{seed.dtype}")
    if row_ids is not None and (row_ids.shape != (n_rows,) or row_ids.dtype != torch.int64):
        raise ValueError(f"bias_dropout_add_layernorm: row_ids must be ({n_rows},) int64, got "
                         f"{tuple(row_ids.shape)} {row_ids.dtype}")
    rows = row_ids.to(device).contiguous() if row_ids is not None else seed.new_zeros(1).to(device)
    return (seed.to(device), rows, dropout_threshold(dropout_p, dropout_bits),
            dropout_scale(dropout_p, dropout_bits))


def bias_dropout_add_layernorm_forward(x, bias, residual, weight, ln_bias, eps, dropout_p, seed, store_sum=True,
                                       row_ids=None, dropout_bits=8):
    """Returns (out like x, s (n_rows, h) or None, mean (n_rows,), rstd (n_rows,)). seed: (1,) int64 tensor (read on
    the device; ignored when dropout_p == 0); row_ids: None or (n_rows,) int64 Philox row ids; dropout_bits 8 or 24
    (the module docstring)."""
    h = x.shape[-1]
    for name, t in (("bias", bias), ("weight", weight), ("ln_bias", ln_bias)):
        if t.shape != (h,):
            raise ValueError(f"bias_dropout_add_layernorm: {name} must be ({h},), got {tuple(t.shape)}")
    if residual.shape != x.shape:
        raise ValueError(f"bias_dropout_add_layernorm: residual {tuple(residual.shape)} != x {tuple(x.shape)}")
    x2 = x.reshape(-1, h).contiguous()  # (n_rows, h)
    r2 = residual.reshape(-1, h).contiguous()
    n_rows = x2.shape[0]
    seed_d, rows_d, thresh, scale = _dropout_args(dropout_p, seed, row_ids, n_rows, x.device, dropout_bits)
    y = torch.empty_like(x2)
    s = torch.empty_like(x2) if store_sum else y  # y is a dummy pointer when not storing
    mean = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    if n_rows:
        meta = _blocks(h, dropout_bits)
        _bias_dropout_add_ln_fwd_kernel[(triton.cdiv(n_rows, meta["BLOCK_M"]),)](
            x2, bias.contiguous(), r2, weight.contiguous(), ln_bias.contiguous(), y, s, mean, rstd, seed_d, rows_d,
            n_rows, h, eps, thresh, scale, HAS_DROPOUT=dropout_p > 0, HAS_ROW_IDS=row_ids is not None,
            STORE_SUM=store_sum, **meta)
    return y.view(x.shape), (s if store_sum else None), mean, rstd


def bias_dropout_add_layernorm_backward(dy, s, mean, rstd, weight, dropout_p, seed, x_dtype, res_dtype,
                                        bias_dtype, ln_bias_dtype, row_ids=None, dropout_bits=8):
    """Returns (dx (n_rows, h), dresidual (n_rows, h), dbias, dweight, dln_bias); seed, row_ids and dropout_bits:
    the forward's."""
    n_rows, h = s.shape
    dy2 = dy.reshape(-1, h).contiguous()
    dx = torch.empty(n_rows, h, dtype=x_dtype, device=s.device)
    dres = torch.empty(n_rows, h, dtype=res_dtype, device=s.device)
    seed_d, rows_d, thresh, scale = _dropout_args(dropout_p, seed, row_ids, n_rows, s.device, dropout_bits)
    meta = _blocks(h, dropout_bits)
    n_tiles = triton.cdiv(n_rows, meta["BLOCK_M"])
    n_progs = max(1, min(n_tiles, 4 * num_sms(s.device)))
    parts = torch.zeros(3, n_progs, h, dtype=torch.float32, device=s.device)
    if n_rows:
        _bias_dropout_add_ln_bwd_kernel[(n_progs,)](
            dy2, s, weight.contiguous(), mean, rstd, dx, dres, parts[0], parts[1], parts[2], seed_d, rows_d, n_rows,
            h, thresh, scale, HAS_DROPOUT=dropout_p > 0, HAS_ROW_IDS=row_ids is not None, **meta)
    dw, dlnb, dbias = parts.sum(1)  # views of one (3, h) tensor: copy so that no two outputs alias
    return dx, dres, dbias.to(bias_dtype, copy=True), dw.to(weight.dtype, copy=True), dlnb.to(ln_bias_dtype, copy=True)


# Autograd through torch.library custom ops (the role of an autograd.Function), so torch.compile keeps them opaque.
# The Philox seed is a (1,) int64 tensor on x's device, an input of the graph: never baked in as a constant, never
# read by the host.
@torch.library.custom_op("bertforge::bias_dropout_add_layernorm_fwd", mutates_args=())
def _fwd_op(x: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, ln_bias: torch.Tensor,
            seed: torch.Tensor, row_ids: Optional[torch.Tensor], eps: float, dropout_p: float,
            store_sum: bool, dropout_bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (out like x, s (n_rows, h) or empty, mean (n_rows,), rstd (n_rows,))."""
    y, s, mean, rstd = bias_dropout_add_layernorm_forward(x, bias, residual, weight, ln_bias, eps, dropout_p, seed,
                                                          store_sum, row_ids, dropout_bits)
    return y, (s if s is not None else x.new_empty(0)), mean, rstd


@_fwd_op.register_fake
def _(x, bias, residual, weight, ln_bias, seed, row_ids, eps, dropout_p, store_sum, dropout_bits):
    h = x.shape[-1]
    n_rows = x.numel() // h
    f32 = dict(dtype=torch.float32, device=x.device)
    return (x.new_empty(x.shape), x.new_empty((n_rows, h) if store_sum else (0,)), torch.empty(n_rows, **f32),
            torch.empty(n_rows, **f32))


@torch.library.custom_op("bertforge::bias_dropout_add_layernorm_bwd", mutates_args=())
def _bwd_op(dy: torch.Tensor, s: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, weight: torch.Tensor,
            seed: torch.Tensor, row_ids: Optional[torch.Tensor], dropout_p: float, x_dtype: torch.dtype,
            res_dtype: torch.dtype, bias_dtype: torch.dtype, ln_bias_dtype: torch.dtype,
            dropout_bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (dx (n_rows, h), dresidual (n_rows, h), dbias, dweight, dln_bias)."""
    return bias_dropout_add_layernorm_backward(dy, s, mean, rstd, weight, dropout_p, seed, x_dtype, res_dtype,
                                               bias_dtype, ln_bias_dtype, row_ids, dropout_bits)


@_bwd_op.register_fake
def _(dy, s, mean, rstd, weight, seed, row_ids, dropout_p, x_dtype, res_dtype, bias_dtype, ln_bias_dtype,
      dropout_bits):
    h = s.shape[1]
    return (s.new_empty(s.shape, dtype=x_dtype), s.new_empty(s.shape, dtype=res_dtype),
            s.new_empty(h, dtype=bias_dtype), s.new_empty(h, dtype=weight.dtype), s.new_empty(h, dtype=ln_bias_dtype))


def _setup_context(ctx, inputs, output):
    x, bias, residual, weight, ln_bias, seed, row_ids, eps, dropout_p, store_sum, dropout_bits = inputs
    _, s, mean, rstd = output
    ctx.save_for_backward(s, mean, rstd, weight, seed, row_ids)
    ctx.meta = (dropout_p, dropout_bits, x.shape, x.dtype, residual.dtype, bias.dtype, ln_bias.dtype)


def _backward(ctx, dy, _ds, _dmean, _drstd):
    s, mean, rstd, weight, seed, row_ids = ctx.saved_tensors
    if s.numel() == 0 and dy.numel() != 0:
        raise RuntimeError("bias_dropout_add_layernorm: backward after a forward run without gradients")
    dropout_p, dropout_bits, shape, x_dtype, res_dtype, bias_dtype, lnb_dtype = ctx.meta
    dx, dres, dbias, dw, dlnb = _bwd_op(dy, s, mean, rstd, weight, seed, row_ids, dropout_p, x_dtype, res_dtype,
                                        bias_dtype, lnb_dtype, dropout_bits)
    return dx.view(shape), dbias, dres.view(shape), dw, dlnb, None, None, None, None, None, None


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def bias_dropout_add_layernorm(x: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                               ln_bias: torch.Tensor, eps: float, dropout_p: float = 0.0,
                               seed: int | torch.Tensor | None = None,
                               row_ids: torch.Tensor | None = None, dropout_bits: int = 8) -> torch.Tensor:
    """LayerNorm(residual + dropout(x + bias)); x, residual (..., h); bias, weight, ln_bias (h,). Output in x's
    dtype, statistics in fp32. dropout_p must already be 0 outside training; the probability applied is
    reference.quantized_dropout_p(dropout_p, dropout_bits) (0.1 -> 26/256 at 8 bits).
    seed: the Philox key, an int or a (1,) int64 tensor; by default drawn on x's device from torch's generator
    (reproducible under torch.manual_seed, no host sync). row_ids: (n_rows,) int64 Philox row ids of the flattened
    rows (default: the row index; see the module docstring). dropout_bits: 8 (16 columns a Philox call) or 24 (4)."""
    if seed is None:
        seed_t = draw_seed_tensor(x.device) if dropout_p > 0 else torch.zeros(1, dtype=torch.int64, device=x.device)
    elif isinstance(seed, torch.Tensor):
        seed_t = seed
    else:
        seed_t = torch.tensor([seed], dtype=torch.int64, device=x.device)
    store_sum = torch.is_grad_enabled() and any(t.requires_grad for t in (x, bias, residual, weight, ln_bias))
    return _fwd_op(x, bias, residual, weight, ln_bias, seed_t, row_ids, eps, dropout_p, store_sum,
                   check_dropout_bits(dropout_bits))[0]
