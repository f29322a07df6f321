"""Fused bidirectional attention for a subset of query rows: every key and value of the unpadded batch, queries for
some tokens only (the last encoder layer of pretraining on its masked rows and [CLS]). FlashAttention's varlen
interface with cu_seqlens_q != cu_seqlens_k (flash_attn_varlen_func), the query rows being tokens of the key
sequences.

Layout: q (n, nh, d) the queries of the tokens at flat indices q_rows (n,) into the token axis, in any order;
k, v (total, nh, d) with cu_seqlens (B + 1,) int32 -> out (n, nh, d), row r equal to bertforge.kernels.attention's
output at token q_rows[r] (and to reference.attention_varlen_rows_ref's), with the same dropout elements: the mask
of query i of sequence b is keyed by i's position in b (module docstring of kernels/attention.py), which the kernels
load per row (`q_pos`) where the full attention has its row index.
bertforge.kernels.padding.query_rows_layout sorts the rows by token (so grouped by sequence) and gives
cu_seqlens_q (B + 1,) int32, the offsets of each sequence's rows in that order, and their positions; the kernels
read and write q's rows through the sorting permutation (`q_order`), so q, out, dout and dq stay in the caller's
order. head_dim <= 128; fp16 / bf16 / fp32 with fp32 accumulation; dropout needs max_seqlen <= 65536.

Kernels (kernels/attention.py's jit helpers and forward inner loop):
  forward  one program per (block of BLOCK_M query rows of sequence b, head): online softmax over b's key blocks;
           saves lse (nh, n) fp32 in sorted order;
  dq       one program per (query block, head): rowsum(dO * O) inline (stored as delta (nh, n) for dk / dv), dq;
  dk / dv  one program per (key block of sequence b, head), looping over b's query rows: deterministic, no
           atomics. Keys of a sequence without query rows get zero gradients.
The query grids have cdiv(max_seqlen_q, BLOCK_M) * B * nh programs; on a GPU max_seqlen_q (the most query rows of
one sequence) defaults to max_seqlen, a bound when rows do not repeat that needs no device sync.

Registered as torch custom ops bertforge::attention_rows_fwd / bertforge::attention_rows_bwd (with fake impls)
called by AttentionRowsFunction, so torch.compile traces through (pass max_seqlen to avoid its device sync).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl

from bertforge.kernels._common import draw_seed_tensor, is_interpreting, next_power_of_2
from bertforge.kernels.attention import (_attn_dq_inner, _attn_fwd_inner, _cfg, _common_meta, _dot, _dropout_args,
                                         _dropout_keep_t, _dropout_stream, _last_contiguous, _launch, _load_rows,
                                         _program_coords, _seq_bounds, _store_rows, launch_grid)
from bertforge.kernels.padding import max_seqlen_of, query_rows_layout
from bertforge.kernels.reference import check_dropout_bits, dropout_threshold

_LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x * log2(e))


@triton.jit
def _query_rows(QOrder, QPos, q0, start_m, nq, BLOCK_M: tl.constexpr):
    """Rows start_m + [0, BLOCK_M) of a sequence whose nq query rows start at sorted index q0 -> (sorted indices,
    in range, rows of q (int64), positions in the sequence)."""
    offs = start_m + tl.arange(0, BLOCK_M)
    ok = offs < nq
    s = q0 + offs
    row = tl.load(QOrder + s, mask=ok, other=0).to(tl.int64)
    return s, ok, row, tl.load(QPos + s, mask=ok, other=0)


@triton.jit(do_not_specialize=["DROP_THRESH", "stride_lse_h", "max_rows"])
def _rows_fwd_kernel(
    Q,  # (n, nh, d) query rows, caller's order; last dim contiguous
    K, V,  # (total, nh, d)
    Out,  # (n, nh, d) like q (fresh, contiguous)
    Lse,  # (nh, n) fp32 natural-log log-sum-exp of the scaled scores, sorted order
    CuSeqlens,  # (B + 1,) int32 key offsets
    CuSeqlensQ,  # (B + 1,) int32 offsets of each sequence's query rows in sorted order
    QOrder,  # (n,) int32: sorted row s is row QOrder[s] of q / out
    QPos,  # (n,) int32: position of sorted row s in its sequence (the dropout counters)
    Seed, RowIds,  # (1,) int64 Philox key, (B,) int64 row ids (as kernels/attention.py)
    sm_scale, DROP_THRESH, drop_scale,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    stride_lse_h,  # n
    nheads, max_rows, SEQ_BUCKET,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, IS_DROPOUT: tl.constexpr, HAS_ROW_IDS: tl.constexpr,
    DOT_FP32: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DROP_GROUP: tl.constexpr,
):
    pid_m, b, h = _program_coords(tl.program_id(0), max_rows, nheads, BLOCK_M)
    q0 = tl.load(CuSeqlensQ + b)
    nq = tl.load(CuSeqlensQ + b + 1) - q0
    start_m = pid_m * BLOCK_M
    if start_m >= nq:
        return
    tok0, seqlen = _seq_bounds(CuSeqlens, CuSeqlens, b, True)
    seed, row_lo, row_hi = _dropout_stream(Seed, RowIds, b, IS_DROPOUT, HAS_ROW_IDS)
    s, r_ok, row, pos = _query_rows(QOrder, QPos, q0, start_m, nq, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q = _load_rows(Q + row[:, None] * stride_qt + h * stride_qh + offs_d[None, :], r_ok, offs_d, HEAD_DIM, BLOCK_D)
    k_ptrs = K + tok0.to(tl.int64) * stride_kt + h * stride_kh + offs_n[:, None] * stride_kt + offs_d[None, :]
    v_ptrs = V + tok0.to(tl.int64) * stride_vt + h * stride_vh + offs_n[:, None] * stride_vt + offs_d[None, :]
    qk_scale = sm_scale * _LOG2E
    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    n_full = (seqlen // BLOCK_N) * BLOCK_N
    for start_n in range(0, n_full, BLOCK_N):
        acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, k_ptrs, v_ptrs, k_ptrs, start_n, seqlen, pos, offs_n,
                                        offs_d, seed, h, row_lo, row_hi, DROP_THRESH, qk_scale, stride_kt, stride_vt,
                                        HEAD_DIM, BLOCK_D, False, IS_DROPOUT, False, DOT_FP32, BLOCK_M, BLOCK_N,
                                        DROP_GROUP)
    if n_full < seqlen:
        acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, k_ptrs, v_ptrs, k_ptrs, n_full, seqlen, pos, offs_n,
                                        offs_d, seed, h, row_lo, row_hi, DROP_THRESH, qk_scale, stride_kt, stride_vt,
                                        HEAD_DIM, BLOCK_D, False, IS_DROPOUT, True, DOT_FP32, BLOCK_M, BLOCK_N,
                                        DROP_GROUP)
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc * (drop_scale / l_safe)[:, None]
    _store_rows(Out + row[:, None] * stride_ot + h * stride_oh + offs_d[None, :], out.to(Out.dtype.element_ty), r_ok,
                offs_d, HEAD_DIM, BLOCK_D)
    tl.store(Lse + h.to(tl.int64) * stride_lse_h + s, (m_i + tl.math.log2(l_safe)) * 0.6931471805599453, mask=r_ok)


@triton.jit(do_not_specialize=["DROP_THRESH", "stride_lse_h", "max_rows"])
def _rows_bwd_dq_kernel(
    Q, K, V, Out, DO,  # Q, DO (n, nh, d) caller's order; Out (n, nh, d) the forward's (contiguous); K, V (total, nh, d)
    DQ,  # (n, nh, d) (fresh, contiguous: Out's strides)
    Lse,  # (nh, n) fp32, sorted order
    Delta,  # (nh, n) fp32 written here: rowsum(dO * O), sorted order
    CuSeqlens, CuSeqlensQ, QOrder, QPos, Seed, RowIds,
    sm_scale, DROP_THRESH, drop_scale,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh, stride_dot, stride_doh,
    stride_lse_h, nheads, max_rows, SEQ_BUCKET,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, IS_DROPOUT: tl.constexpr, HAS_ROW_IDS: tl.constexpr,
    DOT_FP32: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DROP_GROUP: tl.constexpr,
):
    """dq of BLOCK_M query rows from a loop over their sequence's key blocks; keys past seqlen load as zeros."""
    pid_m, b, h = _program_coords(tl.program_id(0), max_rows, nheads, BLOCK_M)
    q0 = tl.load(CuSeqlensQ + b)
    nq = tl.load(CuSeqlensQ + b + 1) - q0
    start_m = pid_m * BLOCK_M
    if start_m >= nq:
        return
    tok0, seqlen = _seq_bounds(CuSeqlens, CuSeqlens, b, True)
    seed, row_lo, row_hi = _dropout_stream(Seed, RowIds, b, IS_DROPOUT, HAS_ROW_IDS)
    s, r_ok, row, pos = _query_rows(QOrder, QPos, q0, start_m, nq, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q = _load_rows(Q + row[:, None] * stride_qt + h * stride_qh + offs_d[None, :], r_ok, offs_d, HEAD_DIM, BLOCK_D)
    do = _load_rows(DO + row[:, None] * stride_dot + h * stride_doh + offs_d[None, :], r_ok, offs_d, HEAD_DIM,
                    BLOCK_D)
    o = _load_rows(Out + row[:, None] * stride_ot + h * stride_oh + offs_d[None, :], r_ok, offs_d, HEAD_DIM, BLOCK_D)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(Delta + h.to(tl.int64) * stride_lse_h + s, delta, mask=r_ok)
    lse2 = tl.load(Lse + h.to(tl.int64) * stride_lse_h + s, mask=r_ok, other=float("inf")) * _LOG2E
    k_ptrs = K + tok0.to(tl.int64) * stride_kt + h * stride_kh + offs_n0[:, None] * stride_kt + offs_d[None, :]
    v_ptrs = V + tok0.to(tl.int64) * stride_vt + h * stride_vh + offs_n0[:, None] * stride_vt + offs_d[None, :]
    dq = _attn_dq_inner(tl.zeros([BLOCK_M, BLOCK_D], tl.float32), q, do, lse2, delta, k_ptrs, v_ptrs, k_ptrs, seqlen,
                        pos, offs_n0, offs_d, seed, h, row_lo, row_hi, DROP_THRESH, drop_scale, sm_scale * _LOG2E,
                        stride_kt, stride_vt, HEAD_DIM, BLOCK_D, False, IS_DROPOUT, DOT_FP32, BLOCK_M, BLOCK_N,
                        DROP_GROUP)
    dq_ptrs = DQ + row[:, None] * stride_ot + h * stride_oh + offs_d[None, :]
    _store_rows(dq_ptrs, (dq * sm_scale).to(DQ.dtype.element_ty), r_ok, offs_d, HEAD_DIM, BLOCK_D)


@triton.jit(do_not_specialize=["DROP_THRESH", "stride_lse_h", "max_seqlen"])
def _rows_bwd_dkdv_kernel(
    Q, K, V, DO,  # Q, DO (n, nh, d) caller's order; K, V (total, nh, d)
    DK, DV,  # (total, nh, d) (fresh, contiguous)
    Lse, Delta,  # (nh, n) fp32, sorted order
    CuSeqlens, CuSeqlensQ, QOrder, QPos, Seed, RowIds,
    sm_scale, DROP_THRESH, drop_scale,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dkt, stride_dkh, stride_dot, stride_doh,
    stride_lse_h, nheads, max_seqlen, SEQ_BUCKET,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, IS_DROPOUT: tl.constexpr, HAS_ROW_IDS: tl.constexpr,
    DOT_FP32: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DROP_GROUP: tl.constexpr,
):
    """dk, dv of BLOCK_N keys of sequence b from a loop over b's query rows (none: zeros)."""
    pid_n, b, h = _program_coords(tl.program_id(0), max_seqlen, nheads, BLOCK_N)
    tok0, seqlen = _seq_bounds(CuSeqlens, CuSeqlens, b, True)
    start_n = pid_n * BLOCK_N
    if start_n >= seqlen:
        return
    seed, row_lo, row_hi = _dropout_stream(Seed, RowIds, b, IS_DROPOUT, HAS_ROW_IDS)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    k_ok = offs_n < seqlen
    tok = tok0.to(tl.int64) + offs_n
    k = _load_rows(K + tok[:, None] * stride_kt + h * stride_kh + offs_d[None, :], k_ok, offs_d, HEAD_DIM, BLOCK_D)
    v = _load_rows(V + tok[:, None] * stride_vt + h * stride_vh + offs_d[None, :], k_ok, offs_d, HEAD_DIM, BLOCK_D)
    q0 = tl.load(CuSeqlensQ + b)
    nq = tl.load(CuSeqlensQ + b + 1) - q0
    qk_scale = sm_scale * _LOG2E
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for start_m in range(0, nq, BLOCK_M):
        s, r_ok, row, pos = _query_rows(QOrder, QPos, q0, start_m, nq, BLOCK_M)
        q = _load_rows(Q + row[:, None] * stride_qt + h * stride_qh + offs_d[None, :], r_ok, offs_d, HEAD_DIM,
                       BLOCK_D)
        do = _load_rows(DO + row[:, None] * stride_dot + h * stride_doh + offs_d[None, :], r_ok, offs_d, HEAD_DIM,
                        BLOCK_D)
        lse2 = tl.load(Lse + h.to(tl.int64) * stride_lse_h + s, mask=r_ok, other=float("inf")) * _LOG2E
        delta = tl.load(Delta + h.to(tl.int64) * stride_lse_h + s, mask=r_ok, other=0.0)
        # transposed: rows = keys, columns = queries; columns out of range (q = 0, lse = inf) give pT = 0
        pT = tl.math.exp2(_dot(k, tl.trans(q), DOT_FP32) * qk_scale - lse2[None, :])  # (BLOCK_N, BLOCK_M)
        dpT = _dot(v, tl.trans(do), DOT_FP32)
        if IS_DROPOUT:
            keepT = _dropout_keep_t(seed, h, row_lo, row_hi, pos, start_n, DROP_THRESH, BLOCK_M, BLOCK_N, DROP_GROUP)
            pdT = tl.where(keepT, pT * drop_scale, 0.0)
            dpT = tl.where(keepT, dpT * drop_scale, 0.0)
        else:
            pdT = pT
        dv += _dot(pdT.to(do.dtype), do, DOT_FP32)
        dk += _dot((pT * (dpT - delta[None, :])).to(q.dtype), q, DOT_FP32)
    out_offs = tok[:, None] * stride_dkt + h * stride_dkh + offs_d[None, :]
    _store_rows(DK + out_offs, (dk * sm_scale).to(DK.dtype.element_ty), k_ok, offs_d, HEAD_DIM, BLOCK_D)
    _store_rows(DV + out_offs, dv.to(DV.dtype.element_ty), k_ok, offs_d, HEAD_DIM, BLOCK_D)


# ---- configs (as kernels/attention.py: the first of each GPU list is autotune=False's; the interpreter gets one
# config, with blocks small enough that small test shapes cover several query and key blocks). No GPU config spills
# registers on sm_90 at d = 32 and 64, dropout at 8 or 24 bits or none, triton 3.6 and 3.9 (python -m
# bertforge.kernels.compile_check --only attention_rows --spills --head-dim 64; tests/kernels/test_compile_sm90.py);
# at d = 128 (no BERT size) 2-3 of the 18 variants with 8-bit dropout do. Dropped for spilling: forward 4 warps 16x128.
GPU_CONFIGS = {
    "fwd": [_cfg(4, 2, BLOCK_M=32, BLOCK_N=64), _cfg(4, 2, BLOCK_M=16, BLOCK_N=64),
            _cfg(8, 2, BLOCK_M=64, BLOCK_N=64)],
    "bwd_dq": [_cfg(4, 2, BLOCK_M=32, BLOCK_N=64), _cfg(4, 2, BLOCK_M=16, BLOCK_N=64),
               _cfg(8, 2, BLOCK_M=64, BLOCK_N=64)],
    "bwd_dkdv": [_cfg(4, 2, BLOCK_M=32, BLOCK_N=64), _cfg(8, 2, BLOCK_M=32, BLOCK_N=128),
                 _cfg(4, 2, BLOCK_M=16, BLOCK_N=64)],
}
_CONFIGS = ({kind: [_cfg(4, 1, BLOCK_M=16, BLOCK_N=32)] for kind in GPU_CONFIGS} if is_interpreting()
            else GPU_CONFIGS)
_KEY = ["HEAD_DIM", "SEQ_BUCKET"]
_rows_fwd = triton.autotune(_CONFIGS["fwd"], key=_KEY)(_rows_fwd_kernel)
_rows_bwd_dq = triton.autotune(_CONFIGS["bwd_dq"], key=_KEY)(_rows_bwd_dq_kernel)
_rows_bwd_dkdv = triton.autotune(_CONFIGS["bwd_dkdv"], key=_KEY)(_rows_bwd_dkdv_kernel)


# ---- host launchers ------------------------------------------------------------------------------------------
def _check(q, k, v):
    if q.dim() != 3 or k.dim() != 3 or k.shape != v.shape or q.shape[1:] != k.shape[1:]:
        raise ValueError(f"attention_rows: q must be (n, nh, d) and k, v (total, nh, d), got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"attention_rows: q, k, v must have the same dtype, got {q.dtype}, {k.dtype}, {v.dtype}")


def _check_bounds(cu_seqlens, cu_seqlens_q, max_seqlen, max_seqlen_q):
    """ValueError where the grids would miss keys (max_seqlen) or query rows (max_seqlen_q); host tensors only."""
    for name, value, cu, what in (("max_seqlen", max_seqlen, cu_seqlens, "the longest sequence"),
                                  ("max_seqlen_q", max_seqlen_q, cu_seqlens_q, "the most query rows of one sequence")):
        need = max_seqlen_of(cu)
        if value < need:
            raise ValueError(f"attention_rows: {name}={value} is below {what} ({need}); pass at least {need} "
                             f"or None to read it from the batch")


def _meta(q, dropout_p, max_seqlen, row_ids, dropout_bits):
    meta = _common_meta(q, True, False, dropout_p, max_seqlen, row_ids, dropout_bits)
    del meta["VARLEN"], meta["HAS_KPM"]
    return meta


def attention_rows_forward(q, k, v, cu_seqlens, cu_seqlens_q, q_order, q_pos, max_seqlen, max_seqlen_q,
                           dropout_p=0.0, softmax_scale=None, seed=0, autotune=True, row_ids=None, dropout_bits=8):
    """-> (out (n, nh, d) like q, lse (nh, n) fp32 in sorted order). cu_seqlens (B + 1,) int32 of the keys;
    cu_seqlens_q (B + 1,) int32, q_order (n,) int32 and q_pos (n,) int32 from padding.query_rows_layout; max_seqlen:
    the longest sequence; max_seqlen_q: at least the most query rows of one sequence (ValueError below either for
    CPU tensors). seed, row_ids, dropout_bits, autotune: as attention.attention_forward."""
    _check(q, k, v)
    if cu_seqlens.device.type == "cpu":  # the interpreter; on a GPU the check would cost a device sync
        _check_bounds(cu_seqlens, cu_seqlens_q, max_seqlen, max_seqlen_q)
    q, k, v = (_last_contiguous(t) for t in (q, k, v))
    batch, (n, nheads, head_dim) = cu_seqlens.numel() - 1, q.shape
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(head_dim)
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty((nheads, n), dtype=torch.float32, device=q.device)
    if n == 0 or batch == 0 or max_seqlen_q == 0:
        return out.zero_(), lse.zero_()
    meta = _meta(q, dropout_p, max_seqlen, row_ids, dropout_bits)
    seed, row_ids, thresh, drop_scale = _dropout_args(dropout_p, seed, row_ids, batch, q.device, dropout_bits)
    grid = lambda META: launch_grid(triton.cdiv(max_seqlen_q, META["BLOCK_M"]), batch, nheads)  # noqa: E731
    _launch(_rows_fwd, "fwd", grid, autotune, q, k, v, out, lse, cu_seqlens, cu_seqlens_q, q_order, q_pos, seed,
            row_ids, scale, thresh, drop_scale, q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0),
            v.stride(1), out.stride(0), out.stride(1), n, nheads, max_seqlen_q, max(16, next_power_of_2(max_seqlen)),
            **meta)
    return out, lse


def attention_rows_backward(dout, q, k, v, out, lse, cu_seqlens, cu_seqlens_q, q_order, q_pos, max_seqlen,
                            max_seqlen_q, dropout_p=0.0, softmax_scale=None, seed=0, autotune=True, row_ids=None,
                            dropout_bits=8):
    """-> (dq (n, nh, d), dk, dv (total, nh, d)). Arguments as attention_rows_forward, plus its out and lse."""
    q, k, v, out, dout = (_last_contiguous(t) for t in (q, k, v, out, dout))
    batch, (n, nheads, head_dim) = cu_seqlens.numel() - 1, q.shape
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(head_dim)
    dq = torch.empty_like(q, memory_format=torch.contiguous_format)
    dk, dv = (torch.empty_like(k, memory_format=torch.contiguous_format) for _ in range(2))
    if n == 0 or batch == 0 or max_seqlen == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    meta = _meta(q, dropout_p, max_seqlen, row_ids, dropout_bits)
    seed, row_ids, thresh, drop_scale = _dropout_args(dropout_p, seed, row_ids, batch, q.device, dropout_bits)
    delta = torch.empty_like(lse)
    bucket = max(16, next_power_of_2(max_seqlen))
    common = (cu_seqlens, cu_seqlens_q, q_order, q_pos, seed, row_ids, scale, thresh, drop_scale, q.stride(0),
              q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1))
    grid_m = lambda META: launch_grid(triton.cdiv(max_seqlen_q, META["BLOCK_M"]), batch, nheads)  # noqa: E731
    _launch(_rows_bwd_dq, "bwd_dq", grid_m, autotune, q, k, v, out, dout, dq, lse, delta, *common, out.stride(0),
            out.stride(1), dout.stride(0), dout.stride(1), n, nheads, max_seqlen_q, bucket, **meta)
    grid_n = lambda META: launch_grid(triton.cdiv(max_seqlen, META["BLOCK_N"]), batch, nheads)  # noqa: E731
    _launch(_rows_bwd_dkdv, "bwd_dkdv", grid_n, autotune, q, k, v, dout, dk, dv, lse, delta, *common, dk.stride(0),
            dk.stride(1), dout.stride(0), dout.stride(1), n, nheads, max_seqlen, bucket, **meta)
    return dq, dk, dv


# ---- custom ops (torch.compile traces through them via the fake impls) -----------------------------------------
@torch.library.custom_op("bertforge::attention_rows_fwd", mutates_args=())
def _attention_rows_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                           cu_seqlens_q: torch.Tensor, q_order: torch.Tensor, q_pos: torch.Tensor, max_seqlen: int,
                           max_seqlen_q: int, dropout_p: float, softmax_scale: float, seed: torch.Tensor,
                           row_ids: Optional[torch.Tensor], autotune: bool = True,
                           dropout_bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return attention_rows_forward(q, k, v, cu_seqlens, cu_seqlens_q, q_order, q_pos, max_seqlen, max_seqlen_q,
                                  dropout_p, softmax_scale, seed, autotune, row_ids, dropout_bits)


@_attention_rows_fwd_op.register_fake
def _(q, k, v, cu_seqlens, cu_seqlens_q, q_order, q_pos, max_seqlen, max_seqlen_q, dropout_p, softmax_scale, seed,
      row_ids, autotune=True, dropout_bits=8):
    return (torch.empty_like(q, memory_format=torch.contiguous_format),
            q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32))


@torch.library.custom_op("bertforge::attention_rows_bwd", mutates_args=())
def _attention_rows_bwd_op(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                           lse: torch.Tensor, cu_seqlens: torch.Tensor, cu_seqlens_q: torch.Tensor,
                           q_order: torch.Tensor, q_pos: torch.Tensor, max_seqlen: int, max_seqlen_q: int,
                           dropout_p: float, softmax_scale: float, seed: torch.Tensor,
                           row_ids: Optional[torch.Tensor], autotune: bool = True,
                           dropout_bits: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return attention_rows_backward(dout, q, k, v, out, lse, cu_seqlens, cu_seqlens_q, q_order, q_pos, max_seqlen,
                                   max_seqlen_q, dropout_p, softmax_scale, seed, autotune, row_ids, dropout_bits)


@_attention_rows_bwd_op.register_fake
def _(dout, q, k, v, out, lse, cu_seqlens, cu_seqlens_q, q_order, q_pos, max_seqlen, max_seqlen_q, dropout_p,
      softmax_scale, seed, row_ids, autotune=True, dropout_bits=8):
    return (torch.empty_like(q, memory_format=torch.contiguous_format),
            torch.empty_like(k, memory_format=torch.contiguous_format),
            torch.empty_like(v, memory_format=torch.contiguous_format))


class AttentionRowsFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens, cu_seqlens_q, q_order, q_pos, max_seqlen, max_seqlen_q, dropout_p,
                softmax_scale, autotune, seed, row_ids, dropout_bits):
        layout = (cu_seqlens, cu_seqlens_q, q_order, q_pos, max_seqlen, max_seqlen_q, dropout_p, softmax_scale)
        out, lse = torch.ops.bertforge.attention_rows_fwd(q, k, v, *layout, seed, row_ids, autotune, dropout_bits)
        ctx.save_for_backward(q, k, v, out, lse, cu_seqlens, cu_seqlens_q, q_order, q_pos, seed, row_ids)
        ctx.scalars = (max_seqlen, max_seqlen_q, dropout_p, softmax_scale)
        ctx.autotune, ctx.dropout_bits = autotune, dropout_bits
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse, cu_seqlens, cu_seqlens_q, q_order, q_pos, seed, row_ids = ctx.saved_tensors
        dq, dk, dv = torch.ops.bertforge.attention_rows_bwd(dout, q, k, v, out, lse, cu_seqlens, cu_seqlens_q,
                                                            q_order, q_pos, *ctx.scalars, seed, row_ids,
                                                            ctx.autotune, ctx.dropout_bits)
        return (dq, dk, dv) + (None,) * 12


def attention_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                   q_rows: torch.Tensor, *, max_seqlen: Optional[int] = None, max_seqlen_q: Optional[int] = None,
                   dropout_p: float = 0.0, softmax_scale: Optional[float] = None, autotune: bool = True,
                   seed: Optional[torch.Tensor] = None, row_ids: Optional[torch.Tensor] = None,
                   dropout_bits: int = 8) -> torch.Tensor:
    """Attention for the query rows of the tokens at flat indices q_rows (n,) (any order): q (n, nh, d), k, v
    (total, nh, d), cu_seqlens (B + 1,) int32 -> (n, nh, d), row r = bertforge.kernels.attention.attention's output
    at token q_rows[r], the same dropout elements for the same seed and row_ids. max_seqlen: the longest sequence
    (None: read from cu_seqlens, a device sync). max_seqlen_q: at least the most query rows of one sequence (None:
    on a GPU with max_seqlen given, max_seqlen, which bounds it unless rows repeat; else read from the rows).
    dropout_p, softmax_scale, autotune, seed, row_ids, dropout_bits: as attention.attention. A max_seqlen or
    max_seqlen_q below the batch's leaves keys without gradients and rows unwritten: refused for CPU tensors, not
    checked on a GPU (a device sync). ValueError for shapes that do not match, q_rows not int64 / int32 and (CPU
    tensors) for q_rows out of [0, total), cu_seqlens[-1] != total or the bounds above."""
    _check(q, k, v)
    total = k.shape[0]
    if q_rows.shape != (q.shape[0],):
        raise ValueError(f"attention_rows: q_rows must be ({q.shape[0]},), one per query row, got "
                         f"{tuple(q_rows.shape)}")
    if q_rows.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"attention_rows: q_rows must be int64 or int32 token indices, got {q_rows.dtype}")
    on_host = q_rows.device.type == "cpu" and not torch.compiler.is_compiling()
    if cu_seqlens.device.type == "cpu" and not torch.compiler.is_compiling() and int(cu_seqlens[-1]) != total:
        raise ValueError(f"attention_rows: cu_seqlens must end at k's {total} tokens, got {int(cu_seqlens[-1])}")
    if on_host and q_rows.numel() and (int(q_rows.min()) < 0 or int(q_rows.max()) >= total):
        raise ValueError(f"attention_rows: q_rows must be token indices in [0, {total}), got "
                         f"[{int(q_rows.min())}, {int(q_rows.max())}]")
    cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
    order, cu_q, positions = query_rows_layout(cu, q_rows.to(q.device), total)
    if max_seqlen_q is None:
        max_seqlen_q = max_seqlen if max_seqlen is not None and q.device.type != "cpu" else max_seqlen_of(cu_q)
    if max_seqlen is None:
        max_seqlen = max_seqlen_of(cu)
    if softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(q.shape[-1])
    if seed is None:
        seed = draw_seed_tensor(q.device) if dropout_p > 0 else torch.zeros(1, dtype=torch.int64, device=q.device)
    if dropout_p > 0:
        dropout_threshold(dropout_p, dropout_bits)  # refuses a p that keeps nothing, before the op is recorded
    return AttentionRowsFunction.apply(q, k, v, cu, cu_q, order.to(torch.int32), positions, int(max_seqlen),
                                       int(max_seqlen_q), float(dropout_p), float(softmax_scale), bool(autotune),
                                       seed, row_ids, check_dropout_bits(dropout_bits))
