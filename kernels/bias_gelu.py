"""Fused bias + GELU for the FFN's first linear: y = gelu(x + bias), forward and backward.

approximate='none' is BERT's exact erf GELU, 'tanh' the tanh approximation (both as torch.nn.functional.gelu).
Math in fp32, storage in x's dtype. The backward recomputes z = x + bias from the saved x (nothing else is saved)
and reduces the bias gradient through fp32 partials summed by torch (deterministic, no atomics): each of at most
~4 programs per SM and column block loops over row tiles, so the partials are (n_programs, n) (6 MB at BERT-base's
n = 3072 on 132 SMs) instead of one row per 4-row tile (100 MB at 32K tokens).
Traffic: forward reads x and writes y (2 bytes x dtype per element), backward reads x and dy, writes dx (3).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from bertforge.kernels._common import is_interpreting, next_power_of_2, num_sms


@triton.jit
def _gelu_and_grad(z, APPROX_TANH: tl.constexpr, WANT_GRAD: tl.constexpr):
    """(gelu(z), d gelu / dz) for fp32 z; without WANT_GRAD the second slot repeats gelu(z) (unused)."""
    if APPROX_TANH:
        inner = 0.7978845608028654 * (z + 0.044715 * z * z * z)  # sqrt(2 / pi) (z + 0.044715 z^3)
        e = tl.exp(-2.0 * tl.abs(inner))  # in (0, 1]: no overflow, no cancellation near tanh = +-1
        r = 1.0 / (1.0 + e)
        one_plus_t = tl.where(inner >= 0, 2.0 * r, 2.0 * e * r)  # 1 + tanh(inner)
        y = 0.5 * z * one_plus_t
        if WANT_GRAD:
            one_minus_t2 = 4.0 * e * r * r  # 1 - tanh(inner)^2
            dy = 0.5 * one_plus_t + 0.5 * z * one_minus_t2 * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * z * z)
        else:
            dy = y
    else:
        cdf = 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476))
        y = z * cdf
        if WANT_GRAD:
            dy = cdf + z * tl.exp(-0.5 * z * z) * 0.3989422804014327  # 1 / sqrt(2 pi)
        else:
            dy = y
    return y, dy


@triton.jit
def _bias_gelu_fwd_kernel(
    X_ptr,  # (n_rows, n_cols) input, row stride = n_cols
    B_ptr,  # (n_cols,) bias
    Y_ptr,  # (n_rows, n_cols) output, x's dtype
    n_rows,
    n_cols,
    APPROX_TANH: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < n_cols
    mask = (rows[:, None] < n_rows) & col_ok[None, :]
    offs = rows[:, None].to(tl.int64) * n_cols + cols[None, :]
    x = tl.load(X_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(B_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    y, _ = _gelu_and_grad(x + b[None, :], APPROX_TANH, False)
    tl.store(Y_ptr + offs, y.to(Y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bias_gelu_bwd_kernel(
    DY_ptr,  # (n_rows, n_cols) upstream gradient
    X_ptr,  # (n_rows, n_cols) saved input
    B_ptr,  # (n_cols,) bias
    DX_ptr,  # (n_rows, n_cols) gradient of x, x's dtype
    DB_part_ptr,  # (num_programs(0), n_cols) fp32 per-program partial sums of the bias gradient
    n_rows,
    n_cols,
    APPROX_TANH: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < n_cols
    b = tl.load(B_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    db = tl.zeros((BLOCK_N,), tl.float32)
    for tile in range(pid_m, tl.cdiv(n_rows, BLOCK_M), tl.num_programs(0)):  # row tiles pid_m, pid_m + P, ...
        rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
        mask = (rows[:, None] < n_rows) & col_ok[None, :]
        offs = rows[:, None].to(tl.int64) * n_cols + cols[None, :]
        x = tl.load(X_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        _, dgelu = _gelu_and_grad(x + b[None, :], APPROX_TANH, True)
        dx = dy * dgelu  # masked lanes have dy = 0
        tl.store(DX_ptr + offs, dx.to(DX_ptr.dtype.element_ty), mask=mask)
        db += tl.sum(dx, axis=0)
    tl.store(DB_part_ptr + pid_m.to(tl.int64) * n_cols + cols, db, mask=col_ok)


def _blocks(n_cols: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps): 4K-8K elements a program on the GPU, one large tile under the interpreter."""
    block_n = min(next_power_of_2(n_cols), 1024 if not is_interpreting() else 4096)
    block_m = max(1, (8192 if is_interpreting() else 4096) // block_n)
    return block_m, block_n, 8 if block_m * block_n >= 4096 else 4


def bias_gelu_forward(x: torch.Tensor, bias: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """x (..., n), bias (n,) -> gelu(x + bias) in x's dtype."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"bias_gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    n_cols = x.shape[-1]
    if bias.shape != (n_cols,):
        raise ValueError(f"bias_gelu: bias must be ({n_cols},), got {tuple(bias.shape)}")
    x2 = x.reshape(-1, n_cols).contiguous()  # (n_rows, n_cols)
    y = torch.empty_like(x2)
    n_rows = x2.shape[0]
    if x2.numel() == 0:
        return y.view(x.shape)
    block_m, block_n, warps = _blocks(n_cols)
    grid = (triton.cdiv(n_rows, block_m), triton.cdiv(n_cols, block_n))
    _bias_gelu_fwd_kernel[grid](x2, bias.contiguous(), y, n_rows, n_cols, APPROX_TANH=approximate == "tanh",
                                BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps)
    return y.view(x.shape)


def bias_gelu_backward(dy: torch.Tensor, x: torch.Tensor, bias: torch.Tensor,
                       approximate: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (dx like x, dbias like bias)."""
    n_cols = x.shape[-1]
    x2 = x.reshape(-1, n_cols).contiguous()
    dy2 = dy.reshape(-1, n_cols).contiguous()
    n_rows = x2.shape[0]
    dx = torch.empty_like(x2)
    if x2.numel() == 0:
        return dx.view(x.shape), torch.zeros_like(bias)
    block_m, block_n, warps = _blocks(n_cols)
    col_blocks = triton.cdiv(n_cols, block_n)
    row_progs = max(1, min(triton.cdiv(n_rows, block_m), triton.cdiv(4 * num_sms(x.device), col_blocks)))
    grid = (row_progs, col_blocks)
    db_part = torch.empty(row_progs, n_cols, dtype=torch.float32, device=x.device)
    _bias_gelu_bwd_kernel[grid](dy2, x2, bias.contiguous(), dx, db_part, n_rows, n_cols,
                                APPROX_TANH=approximate == "tanh", BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps)
    return dx.view(x.shape), db_part.sum(0).to(bias.dtype)


# Autograd through torch.library custom ops (the role of an autograd.Function), so torch.compile keeps them opaque.
@torch.library.custom_op("bertforge::bias_gelu_fwd", mutates_args=())
def _bias_gelu_fwd_op(x: torch.Tensor, bias: torch.Tensor, approximate: str) -> torch.Tensor:
    return bias_gelu_forward(x, bias, approximate)


@_bias_gelu_fwd_op.register_fake
def _(x, bias, approximate):
    return x.new_empty(x.shape)


@torch.library.custom_op("bertforge::bias_gelu_bwd", mutates_args=())
def _bias_gelu_bwd_op(dy: torch.Tensor, x: torch.Tensor, bias: torch.Tensor,
                      approximate: str) -> tuple[torch.Tensor, torch.Tensor]:
    return bias_gelu_backward(dy, x, bias, approximate)


@_bias_gelu_bwd_op.register_fake
def _(dy, x, bias, approximate):
    return x.new_empty(x.shape), bias.new_empty(bias.shape)


def _setup_context(ctx, inputs, output):
    x, bias, ctx.approximate = inputs
    ctx.save_for_backward(x, bias)


def _backward(ctx, dy):
    x, bias = ctx.saved_tensors
    dx, dbias = _bias_gelu_bwd_op(dy, x, bias, ctx.approximate)
    return dx, dbias, None


_bias_gelu_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def bias_gelu(x: torch.Tensor, bias: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """gelu(x + bias) fused; x (..., n), bias (n,). Output and dx in x's dtype, dbias in bias's dtype.
    (bertforge.kernels.reference.bias_gelu_ref promotes x + bias to the wider dtype; the kernel keeps x's, which is the point
    under autocast.)"""
    return _bias_gelu_fwd_op(x, bias, approximate)
