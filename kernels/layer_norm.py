"""Fused post-LN epilogue: out = LayerNorm(residual + dropout(x + bias)) with fp32 statistics, forward and backward.

Used at both post-LN points of a BERT layer (after attention's output projection and after the FFN's second linear).
Dropout keeps an element when its Philox uniform tl.rand(seed, row * n_cols + col) >= p and scales it by 1 / (1 - p);
the seed is drawn from torch's CPU generator (reproducible under torch.manual_seed) and the backward regenerates the
mask from it, so no mask is stored.

Saved for backward: the pre-LN sum s = residual + dropout(x + bias) (n_rows, h) in x's dtype, the per-row fp32 mean
and rstd, and weight: x itself is not kept alive. Traffic per element: forward reads x, residual and writes out, s
(4 x dtype); backward reads dy, s and writes dx, dresidual (4). s is rounded to x's dtype before the statistics (as
plain torch does in low precision), so forward and backward see the same s.

The backward's reductions over rows (weight, ln_bias and bias gradients) go through per-program fp32 partials summed by
torch: deterministic, no atomics. Layout follows Liger-Kernel's layer_norm.py.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._common import is_interpreting, next_power_of_2, num_sms


@triton.jit
def _dropout_keep(seed, offs, p):
    """Keep-mask of dropout with probability p for Philox stream `seed` at element offsets `offs` (int32)."""
    return tl.rand(seed, offs) >= p


@triton.jit
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
    n_rows,
    n_cols,
    eps,
    p,  # dropout probability
    seed,  # Philox seed
    HAS_DROPOUT: tl.constexpr,
    STORE_SUM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_H)
    col_ok = cols < n_cols
    mask = (rows[:, None] < n_rows) & col_ok[None, :]
    offs = rows[:, None] * n_cols + cols[None, :]  # int32: the launcher checks n_rows * n_cols < 2**31
    x = tl.load(X_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x += tl.load(BIAS_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_DROPOUT:
        x = tl.where(_dropout_keep(seed, offs, p), x / (1.0 - p), 0.0)
    s = x + tl.load(RES_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    s = s.to(S_ptr.dtype.element_ty)
    if STORE_SUM:
        tl.store(S_ptr + offs, s, mask=mask)
    s = tl.where(mask, s.to(tl.float32), 0.0)
    mean = tl.sum(s, axis=1) / n_cols  # (BLOCK_M,)
    d = tl.where(mask, s - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=1) / n_cols + eps)
    w = tl.load(W_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    b = tl.load(LNB_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    y = d * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(Y_ptr + offs, y.to(Y_ptr.dtype.element_ty), mask=mask)
    row_ok = rows < n_rows
    tl.store(MEAN_ptr + rows, mean, mask=row_ok)
    tl.store(RSTD_ptr + rows, rstd, mask=row_ok)


@triton.jit
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
    n_rows,
    n_cols,
    p,
    seed,
    HAS_DROPOUT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    pid = tl.program_id(0)
    n_progs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_H)
    col_ok = cols < n_cols
    w = tl.load(W_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    dw_acc = tl.zeros((BLOCK_H,), dtype=tl.float32)
    dlnb_acc = tl.zeros((BLOCK_H,), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_H,), dtype=tl.float32)
    for tile in range(pid, tl.cdiv(n_rows, BLOCK_M), n_progs):
        rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < n_rows
        mask = row_ok[:, None] & col_ok[None, :]
        offs = rows[:, None] * n_cols + cols[None, :]
        dy = tl.load(DY_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        s = tl.load(S_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(MEAN_ptr + rows, mask=row_ok, other=0.0)
        rstd = tl.load(RSTD_ptr + rows, mask=row_ok, other=0.0)
        xhat = tl.where(mask, (s - mean[:, None]) * rstd[:, None], 0.0)
        g = dy * w[None, :]
        c1 = tl.sum(xhat * g, axis=1) / n_cols
        c2 = tl.sum(g, axis=1) / n_cols
        ds = (g - xhat * c1[:, None] - c2[:, None]) * rstd[:, None]
        ds = tl.where(mask, ds, 0.0)
        if HAS_DROPOUT:
            dx = tl.where(_dropout_keep(seed, offs, p), ds / (1.0 - p), 0.0)
        else:
            dx = ds
        tl.store(DRES_ptr + offs, ds.to(DRES_ptr.dtype.element_ty), mask=mask)
        tl.store(DX_ptr + offs, dx.to(DX_ptr.dtype.element_ty), mask=mask)
        dw_acc += tl.sum(dy * xhat, axis=0)
        dlnb_acc += tl.sum(dy, axis=0)
        dbias_acc += tl.sum(dx, axis=0)
    tl.store(DW_part_ptr + pid * n_cols + cols, dw_acc, mask=col_ok)
    tl.store(DLNB_part_ptr + pid * n_cols + cols, dlnb_acc, mask=col_ok)
    tl.store(DBIAS_part_ptr + pid * n_cols + cols, dbias_acc, mask=col_ok)


@triton.jit
def _dropout_mask_kernel(
    M_ptr,  # (n,) bool (as uint8): the keep-mask the kernels above use
    n,
    p,
    seed,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(M_ptr + offs, _dropout_keep(seed, offs, p).to(tl.uint8), mask=offs < n)


def _blocks(n_cols: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_H, num_warps): whole rows, ~4K elements a program (one larger tile under the interpreter)."""
    block_h = next_power_of_2(n_cols)
    if block_h > 16384:
        raise ValueError(f"bias_dropout_add_layernorm: hidden size {n_cols} > 16384 is not supported")
    block_m = max(1, (16384 if is_interpreting() else 4096) // block_h)
    return block_m, block_h, 8 if block_m * block_h >= 4096 else 4


def dropout_keep_mask(seed: int, shape, p: float, device="cpu") -> torch.Tensor:
    """The bool keep-mask the fused op uses for `seed` over a (..., h) tensor of `shape` (for tests and debugging;
    kernels.reference.bias_dropout_add_layernorm_ref replays it as keep_mask)."""
    n = 1
    for d in shape:
        n *= d
    out = torch.empty(n, dtype=torch.uint8, device=device)
    _dropout_mask_kernel[(triton.cdiv(n, 4096),)](out, n, p, seed, BLOCK=4096)
    return out.bool().view(shape)


def bias_dropout_add_layernorm_forward(x, bias, residual, weight, ln_bias, eps, dropout_p, seed, store_sum=True):
    """Returns (out like x, s (n_rows, h) or None, mean (n_rows,), rstd (n_rows,))."""
    h = x.shape[-1]
    for name, t in (("bias", bias), ("weight", weight), ("ln_bias", ln_bias)):
        if t.shape != (h,):
            raise ValueError(f"bias_dropout_add_layernorm: {name} must be ({h},), got {tuple(t.shape)}")
    if residual.shape != x.shape:
        raise ValueError(f"bias_dropout_add_layernorm: residual {tuple(residual.shape)} != x {tuple(x.shape)}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"bias_dropout_add_layernorm: dropout_p must be in [0, 1), got {dropout_p}")
    x2 = x.reshape(-1, h).contiguous()  # (n_rows, h)
    r2 = residual.reshape(-1, h).contiguous()
    n_rows = x2.shape[0]
    if n_rows * h >= 2**31:
        raise ValueError("bias_dropout_add_layernorm: more than 2**31 elements; split the call")
    y = torch.empty_like(x2)
    s = torch.empty_like(x2) if store_sum else y  # y is a dummy pointer when not storing
    mean = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    if n_rows:
        block_m, block_h, warps = _blocks(h)
        _bias_dropout_add_ln_fwd_kernel[(triton.cdiv(n_rows, block_m),)](
            x2, bias.contiguous(), r2, weight.contiguous(), ln_bias.contiguous(), y, s, mean, rstd, n_rows, h,
            eps, dropout_p, seed, HAS_DROPOUT=dropout_p > 0, STORE_SUM=store_sum, BLOCK_M=block_m, BLOCK_H=block_h,
            num_warps=warps)
    return y.view(x.shape), (s if store_sum else None), mean, rstd


def bias_dropout_add_layernorm_backward(dy, s, mean, rstd, weight, dropout_p, seed, x_dtype, res_dtype,
                                        bias_dtype, ln_bias_dtype):
    """Returns (dx (n_rows, h), dresidual (n_rows, h), dbias, dweight, dln_bias)."""
    n_rows, h = s.shape
    dy2 = dy.reshape(-1, h).contiguous()
    dx = torch.empty(n_rows, h, dtype=x_dtype, device=s.device)
    dres = torch.empty(n_rows, h, dtype=res_dtype, device=s.device)
    block_m, block_h, warps = _blocks(h)
    n_tiles = triton.cdiv(n_rows, block_m)
    n_progs = max(1, min(n_tiles, 4 * num_sms(s.device)))
    parts = torch.zeros(3, n_progs, h, dtype=torch.float32, device=s.device)
    if n_rows:
        _bias_dropout_add_ln_bwd_kernel[(n_progs,)](
            dy2, s, weight.contiguous(), mean, rstd, dx, dres, parts[0], parts[1], parts[2], n_rows, h,
            dropout_p, seed, HAS_DROPOUT=dropout_p > 0, BLOCK_M=block_m, BLOCK_H=block_h, num_warps=warps)
    dw, dlnb, dbias = parts.sum(1)  # views of one (3, h) tensor: copy so that no two outputs alias
    return dx, dres, dbias.to(bias_dtype, copy=True), dw.to(weight.dtype, copy=True), dlnb.to(ln_bias_dtype, copy=True)


# Autograd through torch.library custom ops (the role of an autograd.Function), so torch.compile keeps them opaque.
# The Philox seed travels as a (1,) int64 CPU tensor: a compiled graph must not bake it in as a constant.
@torch.library.custom_op("bertforge::bias_dropout_add_layernorm_fwd", mutates_args=())
def _fwd_op(x: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, ln_bias: torch.Tensor,
            seed: torch.Tensor, eps: float, dropout_p: float,
            store_sum: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (out like x, s (n_rows, h) or empty, mean (n_rows,), rstd (n_rows,))."""
    y, s, mean, rstd = bias_dropout_add_layernorm_forward(x, bias, residual, weight, ln_bias, eps, dropout_p,
                                                          int(seed.item()), store_sum)
    return y, (s if s is not None else x.new_empty(0)), mean, rstd


@_fwd_op.register_fake
def _(x, bias, residual, weight, ln_bias, seed, eps, dropout_p, store_sum):
    h = x.shape[-1]
    n_rows = x.numel() // h
    f32 = dict(dtype=torch.float32, device=x.device)
    return (x.new_empty(x.shape), x.new_empty((n_rows, h) if store_sum else (0,)), torch.empty(n_rows, **f32),
            torch.empty(n_rows, **f32))


@torch.library.custom_op("bertforge::bias_dropout_add_layernorm_bwd", mutates_args=())
def _bwd_op(dy: torch.Tensor, s: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, weight: torch.Tensor,
            seed: torch.Tensor, dropout_p: float, x_dtype: torch.dtype, res_dtype: torch.dtype,
            bias_dtype: torch.dtype, ln_bias_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                          torch.Tensor, torch.Tensor]:
    """Returns (dx (n_rows, h), dresidual (n_rows, h), dbias, dweight, dln_bias)."""
    return bias_dropout_add_layernorm_backward(dy, s, mean, rstd, weight, dropout_p, int(seed.item()), x_dtype,
                                               res_dtype, bias_dtype, ln_bias_dtype)


@_bwd_op.register_fake
def _(dy, s, mean, rstd, weight, seed, dropout_p, x_dtype, res_dtype, bias_dtype, ln_bias_dtype):
    h = s.shape[1]
    return (s.new_empty(s.shape, dtype=x_dtype), s.new_empty(s.shape, dtype=res_dtype),
            s.new_empty(h, dtype=bias_dtype), s.new_empty(h, dtype=weight.dtype), s.new_empty(h, dtype=ln_bias_dtype))


def _setup_context(ctx, inputs, output):
    x, bias, residual, weight, ln_bias, seed, eps, dropout_p, store_sum = inputs
    _, s, mean, rstd = output
    ctx.save_for_backward(s, mean, rstd, weight, seed)
    ctx.meta = (dropout_p, x.shape, x.dtype, residual.dtype, bias.dtype, ln_bias.dtype)


def _backward(ctx, dy, _ds, _dmean, _drstd):
    s, mean, rstd, weight, seed = ctx.saved_tensors
    if s.numel() == 0 and dy.numel() != 0:
        raise RuntimeError("bias_dropout_add_layernorm: backward after a forward run without gradients")
    dropout_p, shape, x_dtype, res_dtype, bias_dtype, lnb_dtype = ctx.meta
    dx, dres, dbias, dw, dlnb = _bwd_op(dy, s, mean, rstd, weight, seed, dropout_p, x_dtype, res_dtype, bias_dtype,
                                        lnb_dtype)
    return dx.view(shape), dbias, dres.view(shape), dw, dlnb, None, None, None, None


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def bias_dropout_add_layernorm(x: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                               ln_bias: torch.Tensor, eps: float, dropout_p: float = 0.0,
                               seed: int | None = None) -> torch.Tensor:
    """LayerNorm(residual + dropout(x + bias)); x, residual (..., h); bias, weight, ln_bias (h,). Output in x's
    dtype, statistics in fp32. `seed` (optional) fixes the Philox stream; by default it is drawn from torch's CPU
    generator (reproducible under torch.manual_seed). dropout_p must already be 0 outside training."""
    if seed is not None:
        seed_t = torch.tensor([seed], dtype=torch.int64)
    elif dropout_p > 0:
        seed_t = torch.randint(0, 2**31 - 1, (1,), dtype=torch.int64)
    else:
        seed_t = torch.zeros(1, dtype=torch.int64)
    store_sum = torch.is_grad_enabled() and any(t.requires_grad for t in (x, bias, residual, weight, ln_bias))
    return _fwd_op(x, bias, residual, weight, ln_bias, seed_t, eps, dropout_p, store_sum)[0]
