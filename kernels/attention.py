"""Fused bidirectional multi-head attention (FlashAttention-2 style: the S x S matrix is never materialised), forward
and backward, for BERT-style encoders.

Layouts (FlashAttention's, the same as engine/ops.py):
  padded:   q, k, v (B, S, nh, d) with key_padding_mask (B, S) bool, True = real token (or None);
  unpadded: q, k, v (total, nh, d) with cu_seqlens (B + 1,) int32 and max_seqlen.
The output has q's layout. head_dim any size <= 128 (32 / 64 / 128 are the tuned ones); fp16 / bf16 / fp32 inputs,
fp32 accumulation and softmax statistics.

Algorithm (Dao 2023, FlashAttention-2; Triton tutorial 06): one program owns BLOCK_M query rows of one (batch, head)
and streams BLOCK_N key/value rows with an online softmax (exp2 domain). It saves the natural-log log-sum-exp of the
scaled scores, lse (nh, R) fp32 with R = B * S (padded) or total (unpadded). The backward recomputes P from lse:
  * sequences that fit one key block (max_seqlen <= 128, d <= 64; <= 64 for d = 128: BERT's S = 128) run ONE program
    per (batch, head) that produces dq, dk and dv together (5 GEMMs instead of 7, rowsum(dO * O) computed inline);
  * longer ones run a delta = rowsum(dO * O) kernel, a dk/dv kernel (program per key block, loop over query blocks)
    and a dq kernel (program per query block, loop over key blocks): no atomics, deterministic. Alternatively
    (dq_atomic=True) the dk/dv kernel adds dq into an fp32 buffer with atomics, as FlashAttention-2's CUDA backward
    does: 5 GEMMs instead of 7, not bit-reproducible.

Padding: the key-padding mask becomes per-row lengths L_b = (last real position + 1), so a program never touches the
key blocks past L_b (right padding, as BERT batches are, costs nothing). Inside [0, L_b) the mask itself is loaded
and applied, so ANY mask is exact (left padding, holes). Query rows at or after L_b output zero and get zero
gradients; query rows inside holes attend to the real keys like SDPA's would (finite, ignored by the tests).

Dropout on the attention probabilities (p = dropout_p) is applied inside the kernels (bertforge.kernels.reference: Philox-4x32-10
with the call's seed as key): keep(b, h, i, j) is element j % G of the call with counter (i * 16384 + j // G, h,
row_id low, row_id high). dropout_bits 8 (the default, FlashAttention-2's rate): G = 16, byte j % 4 of word
(j % 16) // 4, kept when >= round(p * 256); dropout_bits 24: G = 4, word j % 4, kept when its top 24 bits are
>= round(p * 2^24). Kept probabilities are scaled by 1 / (1 - p_q), p_q = reference.quantized_dropout_p(p,
dropout_bits) (0.1 -> 26/256 at 8 bits). row_id is the sequence index b, or row_ids[b] when a (B,) int64 `row_ids`
is given (per-sample streams: a sequence's mask then depends on its id, not on its place in the batch). It is a pure
function of (seed, row_id, h, i, j), independent of block sizes and of the padded / unpadded layout, so the backward
regenerates exactly the forward's mask and bertforge.kernels.reference.attention_dropout_keep_ref replays it in torch. The seed is a (1,) int64 tensor on the device, drawn
there from torch's generator (torch.manual_seed reproduces it; no host sync; a fresh seed at each CUDA-graph replay)
and saved for the backward. Limits with dropout: max_seqlen <= 65536.

Grid: one axis of cdiv(max_seqlen, BLOCK) * B * nh programs (axis 0 takes 2^31 - 1 programs, axes 1 and 2 only
65,535), the sequence blocks of one (b, h) adjacent so they share its K and V in L2.

Registered as torch custom ops bertforge::attention_fwd / bertforge::attention_bwd (with fake impls) called by
AttentionFunction, so torch.compile traces through it without graph breaks (unpadded: pass max_seqlen, else
attention() reads it from cu_seqlens with a device sync).
Testing note: under TRITON_INTERPRET=1, fp32 -> bf16 casts truncate instead of rounding to nearest (about 2x the
rounding error of the GPU), so bf16 errors measured on CPU are pessimistic; bf16 dots are upcast there (DOT_FP32).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl

from bertforge.kernels._common import draw_seed_tensor, is_interpreting, next_power_of_2
from bertforge.kernels._philox import keep_flags
from bertforge.kernels.padding import max_seqlen_of
from bertforge.kernels.reference import (ATTN_DROPOUT_ROW_STRIDE, check_dropout_bits, dropout_group, dropout_scale,
                                         dropout_threshold)

_DROP_ROW_STRIDE = ATTN_DROPOUT_ROW_STRIDE  # Philox counters per query row: max_seqlen <= 65536 with dropout
_MAX_DROPOUT_SEQLEN = 65536  # i * 16384 + j // G stays below 2^31 (int32 arithmetic in the kernels)


# ---- small jit helpers ---------------------------------------------------------------------------------------
@triton.jit
def _seq_bounds(CuSeqlens, SeqLens, b, VARLEN: tl.constexpr):
    """(first token index of sequence b in the token axis, its length)."""
    if VARLEN:
        tok0 = tl.load(CuSeqlens + b)
        seqlen = tl.load(CuSeqlens + b + 1) - tok0
    else:
        tok0 = b * 0
        seqlen = tl.load(SeqLens + b)
    return tok0, seqlen


@triton.jit
def _load_rows(ptrs, rows_ok, offs_d, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    """Load a (rows, BLOCK_D) tile, zero outside rows_ok and outside the head dim."""
    if HEAD_DIM == BLOCK_D:
        return tl.load(ptrs, mask=rows_ok[:, None], other=0.0)
    else:
        return tl.load(ptrs, mask=rows_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)


@triton.jit
def _store_rows(ptrs, val, rows_ok, offs_d, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    if HEAD_DIM == BLOCK_D:
        tl.store(ptrs, val, mask=rows_ok[:, None])
    else:
        tl.store(ptrs, val, mask=rows_ok[:, None] & (offs_d[None, :] < HEAD_DIM))


@triton.jit
def _dot(a, b, DOT_FP32: tl.constexpr):
    """a @ b with fp32 accumulation; DOT_FP32 upcasts operands (bf16 dots are wrong in the Triton interpreter)."""
    if DOT_FP32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32))
    else:
        return tl.dot(a, b)


@triton.jit
def _program_coords(pid, max_seqlen, nheads, BLOCK: tl.constexpr):
    """(block index along the sequence, b, h) of program `pid` of the 1-D grid of cdiv(max_seqlen, BLOCK) * B * nh
    programs; the blocks of one (b, h) are adjacent."""
    n_blocks = tl.cdiv(max_seqlen, BLOCK)
    bh = pid // n_blocks
    return pid % n_blocks, bh // nheads, bh % nheads


@triton.jit
def _dropout_stream(Seed, RowIds, b, IS_DROPOUT: tl.constexpr, HAS_ROW_IDS: tl.constexpr):
    """(Philox key, row id low word, row id high word) of sequence b (zeros without dropout)."""
    if HAS_ROW_IDS:
        row = tl.load(RowIds + b)
    else:
        row = b.to(tl.int64)
    if IS_DROPOUT:
        seed = tl.load(Seed)
    else:
        seed = row * 0
    return seed, (row & 0xFFFFFFFF).to(tl.uint32), (row >> 32).to(tl.uint32)


@triton.jit
def _dropout_keep(seed, h, row_lo, row_hi, offs_m, start_n, DROP_THRESH, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr, DROP_GROUP: tl.constexpr):
    """Keep mask (BLOCK_M, BLOCK_N) of rows offs_m and columns start_n + [0, BLOCK_N) (start_n and BLOCK_N multiples
    of DROP_GROUP = G, 16 or 4). The Philox call with counter (i * 16384 + j // G, h, row_lo, row_hi) decides the G
    columns G (j // G) + [0, G) (kernels/_philox.py: flags joined in-thread, then laid out as columns)."""
    calls = start_n // DROP_GROUP + tl.arange(0, BLOCK_N // DROP_GROUP)
    c0 = (offs_m[:, None] * 16384 + calls[None, :]).to(tl.uint32)  # (BLOCK_M, BLOCK_N // G)
    z = c0 * 0
    r0, r1, r2, r3 = tl.philox(seed, c0, z + h.to(tl.uint32), z + row_lo, z + row_hi)
    keep = keep_flags(r0, r1, r2, r3, DROP_THRESH, BLOCK_M, BLOCK_N // DROP_GROUP, DROP_GROUP)
    return tl.reshape(keep, (BLOCK_M, BLOCK_N))


@triton.jit
def _dropout_keep_t(seed, h, row_lo, row_hi, offs_m, start_n, DROP_THRESH, BLOCK_M: tl.constexpr,
                    BLOCK_N: tl.constexpr, DROP_GROUP: tl.constexpr):
    """The transpose of `_dropout_keep`, (BLOCK_N, BLOCK_M) [key, query], drawn in that orientation."""
    calls = start_n // DROP_GROUP + tl.arange(0, BLOCK_N // DROP_GROUP)
    c0 = (calls[:, None] + offs_m[None, :] * 16384).to(tl.uint32)  # (BLOCK_N // G, BLOCK_M)
    z = c0 * 0
    r0, r1, r2, r3 = tl.philox(seed, c0, z + h.to(tl.uint32), z + row_lo, z + row_hi)
    keep = keep_flags(r0, r1, r2, r3, DROP_THRESH, BLOCK_N // DROP_GROUP, BLOCK_M, DROP_GROUP)  # [c, i, t]
    return tl.reshape(tl.permute(keep, (0, 2, 1)), (BLOCK_N, BLOCK_M))


# ---- forward -------------------------------------------------------------------------------------------------
# The seed, the dropout threshold and the row counts are not specialised (Triton would otherwise compile variants for
# values == 1 or divisible by 16: a fresh seed every step, a different token total every unpadded batch).
@triton.jit
def _attn_fwd_inner(acc, l_i, m_i, q, k_ptrs, v_ptrs, kpm_ptrs, start_n, seqlen, offs_m, offs_n, offs_d, seed, h,
                    row_lo, row_hi,
                    DROP_THRESH, qk_scale, stride_kt, stride_vt,
                    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, HAS_KPM: tl.constexpr, IS_DROPOUT: tl.constexpr,
                    MASK_TAIL: tl.constexpr, DOT_FP32: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    DROP_GROUP: tl.constexpr):
    """One key block: online-softmax update of (acc, l_i, m_i); MASK_TAIL masks keys >= seqlen (last block)."""
    cols = start_n + offs_n
    k_ok = cols < seqlen
    k = _load_rows(k_ptrs + start_n * stride_kt, k_ok, offs_d, HEAD_DIM, BLOCK_D)
    qk = _dot(q, tl.trans(k), DOT_FP32) * qk_scale  # (BLOCK_M, BLOCK_N), log2 units
    if HAS_KPM:
        k_ok = k_ok & (tl.load(kpm_ptrs + start_n, mask=k_ok, other=0) != 0)
        qk = tl.where(k_ok[None, :], qk, float("-inf"))
    elif MASK_TAIL:
        qk = tl.where(k_ok[None, :], qk, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    p = tl.math.exp2(qk - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    if IS_DROPOUT:
        p = tl.where(_dropout_keep(seed, h, row_lo, row_hi, offs_m, start_n, DROP_THRESH, BLOCK_M, BLOCK_N,
                                   DROP_GROUP), p, 0.0)
    v = _load_rows(v_ptrs + start_n * stride_vt, k_ok, offs_d, HEAD_DIM, BLOCK_D)
    acc += _dot(p.to(v.dtype), v, DOT_FP32)
    return acc, l_i, m_new


@triton.jit
def _attn_dq_inner(dq, q, do, lse2, delta, k_ptrs, v_ptrs, kpm_ptrs, seqlen, offs_m, offs_n0, offs_d, seed, h,
                   row_lo, row_hi, DROP_THRESH, drop_scale, qk_scale, stride_kt, stride_vt,
                   HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, HAS_KPM: tl.constexpr, IS_DROPOUT: tl.constexpr,
                   DOT_FP32: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DROP_GROUP: tl.constexpr):
    """dq (BLOCK_M, BLOCK_D) fp32 plus the products of every key block [0, seqlen) of one sequence: P recomputed from
    lse2 (log2 units), dS = P * (dP - delta), dq += dS K. offs_m: the rows' positions in the sequence (the dropout
    counters). Keys past seqlen load as k = v = 0, so they add nothing and need no mask."""
    for start_n in range(0, seqlen, BLOCK_N):
        k_ok = start_n + offs_n0 < seqlen
        k = _load_rows(k_ptrs + start_n * stride_kt, k_ok, offs_d, HEAD_DIM, BLOCK_D)
        v = _load_rows(v_ptrs + start_n * stride_vt, k_ok, offs_d, HEAD_DIM, BLOCK_D)
        p = tl.math.exp2(_dot(q, tl.trans(k), DOT_FP32) * qk_scale - lse2[:, None])  # (BLOCK_M, BLOCK_N)
        if HAS_KPM:
            k_ok = k_ok & (tl.load(kpm_ptrs + start_n, mask=k_ok, other=0) != 0)
            p = tl.where(k_ok[None, :], p, 0.0)
        dp = _dot(do, tl.trans(v), DOT_FP32)
        if IS_DROPOUT:
            keep = _dropout_keep(seed, h, row_lo, row_hi, offs_m, start_n, DROP_THRESH, BLOCK_M, BLOCK_N, DROP_GROUP)
            dp = tl.where(keep, dp * drop_scale, 0.0)
        ds = p * (dp - delta[:, None])
        dq += _dot(ds.to(k.dtype), k, DOT_FP32)
    return dq


@triton.jit(do_not_specialize=["DROP_THRESH", "stride_lse_h", "seq_stride", "max_seqlen"])
def _attn_fwd_kernel(
    Q, K, V,  # (B, S, nh, d) padded or (total, nh, d) unpadded; last dim contiguous
    Out,  # like q (fresh, contiguous)
    Lse,  # (nh, R) fp32 natural-log log-sum-exp of the scaled scores
    CuSeqlens,  # (B + 1,) int32 token offsets (VARLEN)
    SeqLens,  # (B,) int32 lengths = last real position + 1 (padded)
    Kpm,  # (B, S) uint8 key-padding mask, 1 = real (HAS_KPM)
    Seed,  # (1,) int64 Philox key (IS_DROPOUT)
    RowIds,  # (B,) int64 Philox row ids (HAS_ROW_IDS)
    sm_scale,  # softmax scale
    DROP_THRESH,  # dropout_threshold(p, dropout_bits): drop an element whose random bits are below it
    drop_scale,  # dropout_scale(p, dropout_bits) = 1 / (1 - p_q)
    stride_qb, stride_qt, stride_qh,  # batch stride (0 when VARLEN), token stride, head stride
    stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh,
    stride_ob, stride_ot, stride_oh,
    stride_kpm_b,
    stride_lse_h,  # R
    nheads,
    seq_stride,  # S (padded; LSE row of (b, i) is b * S + i) or 0 (VARLEN; it is cu_seqlens[b] + i)
    max_seqlen,  # longest sequence: sizes the grid
    SEQ_BUCKET,  # next power of 2 of max_seqlen: autotune key only
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, VARLEN: tl.constexpr, HAS_KPM: tl.constexpr,
    IS_DROPOUT: tl.constexpr, HAS_ROW_IDS: tl.constexpr, DOT_FP32: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, DROP_GROUP: tl.constexpr,  # keys per Philox call: 16 (8-bit thresholds) or 4 (24-bit)
):
    pid_m, b, h = _program_coords(tl.program_id(0), max_seqlen, nheads, BLOCK_M)
    seed, row_lo, row_hi = _dropout_stream(Seed, RowIds, b, IS_DROPOUT, HAS_ROW_IDS)
    tok0, seqlen = _seq_bounds(CuSeqlens, SeqLens, b, VARLEN)
    store_lim = seqlen if VARLEN else seq_stride  # padded outputs write zeros up to S
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    o_ptrs = (Out + b.to(tl.int64) * stride_ob + tok0.to(tl.int64) * stride_ot + h * stride_oh
              + offs_m[:, None] * stride_ot + offs_d[None, :])
    if start_m >= seqlen:
        if not VARLEN:
            _store_rows(o_ptrs, tl.zeros([BLOCK_M, BLOCK_D], Out.dtype.element_ty), offs_m < store_lim, offs_d,
                        HEAD_DIM, BLOCK_D)
        return
    q_ptrs = (Q + b.to(tl.int64) * stride_qb + tok0.to(tl.int64) * stride_qt + h * stride_qh
              + offs_m[:, None] * stride_qt + offs_d[None, :])
    k_ptrs = (K + b.to(tl.int64) * stride_kb + tok0.to(tl.int64) * stride_kt + h * stride_kh
              + offs_n[:, None] * stride_kt + offs_d[None, :])
    v_ptrs = (V + b.to(tl.int64) * stride_vb + tok0.to(tl.int64) * stride_vt + h * stride_vh
              + offs_n[:, None] * stride_vt + offs_d[None, :])
    kpm_ptrs = Kpm + b.to(tl.int64) * stride_kpm_b + offs_n
    q = _load_rows(q_ptrs, offs_m < seqlen, offs_d, HEAD_DIM, BLOCK_D)
    qk_scale = sm_scale * 1.4426950408889634  # exp(x) = exp2(x * log2(e))
    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)  # finite: a fully masked block gives p = 0, not NaN
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    n_full = (seqlen // BLOCK_N) * BLOCK_N
    for start_n in range(0, n_full, BLOCK_N):
        acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, k_ptrs, v_ptrs, kpm_ptrs, start_n, seqlen, offs_m, offs_n,
                                        offs_d, seed, h, row_lo, row_hi, DROP_THRESH, qk_scale, stride_kt, stride_vt, HEAD_DIM,
                                        BLOCK_D, HAS_KPM, IS_DROPOUT, False, DOT_FP32, BLOCK_M, BLOCK_N, DROP_GROUP)
    if n_full < seqlen:
        acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, k_ptrs, v_ptrs, kpm_ptrs, n_full, seqlen, offs_m, offs_n,
                                        offs_d, seed, h, row_lo, row_hi, DROP_THRESH, qk_scale, stride_kt, stride_vt, HEAD_DIM,
                                        BLOCK_D, HAS_KPM, IS_DROPOUT, True, DOT_FP32, BLOCK_M, BLOCK_N, DROP_GROUP)
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    row_ok = offs_m < seqlen
    out = acc * (drop_scale / l_safe)[:, None]
    out = tl.where(row_ok[:, None], out, 0.0)
    _store_rows(o_ptrs, out.to(Out.dtype.element_ty), offs_m < store_lim, offs_d, HEAD_DIM, BLOCK_D)
    lse = (m_i + tl.math.log2(l_safe)) * 0.6931471805599453
    tl.store(Lse + h.to(tl.int64) * stride_lse_h + b * seq_stride + tok0 + offs_m, lse, mask=row_ok)


# ---- backward ------------------------------------------------------------------------------------------------
@triton.jit(do_not_specialize=["stride_lse_h", "seq_stride", "max_seqlen"])
def _attn_bwd_preprocess_kernel(
    Out, DO,  # like q; DO has its own strides
    Delta,  # (nh, R) fp32: rowsum(dO * O)
    CuSeqlens, SeqLens,
    stride_ob, stride_ot, stride_oh,
    stride_dob, stride_dot, stride_doh,
    stride_lse_h, nheads, seq_stride, max_seqlen,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, VARLEN: tl.constexpr, BLOCK_M: tl.constexpr,
):
    pid_m, b, h = _program_coords(tl.program_id(0), max_seqlen, nheads, BLOCK_M)
    tok0, seqlen = _seq_bounds(CuSeqlens, SeqLens, b, VARLEN)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < seqlen
    o = _load_rows(Out + b.to(tl.int64) * stride_ob + tok0.to(tl.int64) * stride_ot + h * stride_oh
                   + offs_m[:, None] * stride_ot + offs_d[None, :], row_ok, offs_d, HEAD_DIM, BLOCK_D)
    do = _load_rows(DO + b.to(tl.int64) * stride_dob + tok0.to(tl.int64) * stride_dot + h * stride_doh
                    + offs_m[:, None] * stride_dot + offs_d[None, :], row_ok, offs_d, HEAD_DIM, BLOCK_D)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(Delta + h.to(tl.int64) * stride_lse_h + b * seq_stride + tok0 + offs_m, delta, mask=row_ok)


@triton.jit(do_not_specialize=["DROP_THRESH", "stride_lse_h", "seq_stride", "max_seqlen"])
def _attn_bwd_dkdv_kernel(
    Q, K, V, Out, DO,  # like q; Out only read when DQ_MODE == 1 (inline delta)
    DQ,  # like q, Out's strides: DQ_MODE 1 stores dq into it (q's dtype), 2 atomically adds (fp32, zeroed)
    DK, DV,  # like q (fresh, contiguous: Out's strides)
    Lse, Delta,  # (nh, R) fp32; Delta only read when DQ_MODE != 1
    CuSeqlens, SeqLens, Kpm, Seed, RowIds,
    sm_scale, DROP_THRESH, drop_scale,
    stride_qb, stride_qt, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh,
    stride_ob, stride_ot, stride_oh,  # Out, DQ, DK, DV
    stride_dob, stride_dot, stride_doh,
    stride_kpm_b, stride_lse_h, nheads, seq_stride, max_seqlen, SEQ_BUCKET,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, VARLEN: tl.constexpr, HAS_KPM: tl.constexpr,
    IS_DROPOUT: tl.constexpr, HAS_ROW_IDS: tl.constexpr, DQ_MODE: tl.constexpr, DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DROP_GROUP: tl.constexpr,
):
    """One program per (key block, batch * head): dk, dv of BLOCK_N keys from a loop over all query blocks.
    DQ_MODE 0: dq is left to _attn_bwd_dq_kernel (deterministic split). 1 (the whole sequence is this one key
    block): also stores dq of every query block and computes delta = rowsum(dO * O) inline. 2: atomically adds
    this key block's share of dq into an fp32 buffer (FlashAttention-2's CUDA scheme: 5 GEMMs, not 7)."""
    pid_n, b, h = _program_coords(tl.program_id(0), max_seqlen, nheads, BLOCK_N)
    seed, row_lo, row_hi = _dropout_stream(Seed, RowIds, b, IS_DROPOUT, HAS_ROW_IDS)
    tok0, seqlen = _seq_bounds(CuSeqlens, SeqLens, b, VARLEN)
    store_lim = seqlen if VARLEN else seq_stride
    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    out_base = b.to(tl.int64) * stride_ob + tok0.to(tl.int64) * stride_ot + h * stride_oh
    dk_ptrs = DK + out_base + offs_n[:, None] * stride_ot + offs_d[None, :]
    dv_ptrs = DV + out_base + offs_n[:, None] * stride_ot + offs_d[None, :]
    if DQ_MODE != 1:  # (mode 1 has start_n = 0 and must zero-fill the padded dq rows, so it never exits here)
        if start_n >= seqlen:
            if not VARLEN:
                zero = tl.zeros([BLOCK_N, BLOCK_D], DK.dtype.element_ty)
                _store_rows(dk_ptrs, zero, offs_n < store_lim, offs_d, HEAD_DIM, BLOCK_D)
                _store_rows(dv_ptrs, zero, offs_n < store_lim, offs_d, HEAD_DIM, BLOCK_D)
            return
    k_ok = offs_n < seqlen
    k = _load_rows(K + b.to(tl.int64) * stride_kb + tok0.to(tl.int64) * stride_kt + h * stride_kh
                   + offs_n[:, None] * stride_kt + offs_d[None, :], k_ok, offs_d, HEAD_DIM, BLOCK_D)
    v = _load_rows(V + b.to(tl.int64) * stride_vb + tok0.to(tl.int64) * stride_vt + h * stride_vh
                   + offs_n[:, None] * stride_vt + offs_d[None, :], k_ok, offs_d, HEAD_DIM, BLOCK_D)
    if HAS_KPM:
        k_ok = k_ok & (tl.load(Kpm + b.to(tl.int64) * stride_kpm_b + offs_n, mask=k_ok, other=0) != 0)
    q_ptrs = (Q + b.to(tl.int64) * stride_qb + tok0.to(tl.int64) * stride_qt + h * stride_qh
              + offs_m0[:, None] * stride_qt + offs_d[None, :])
    do_ptrs = (DO + b.to(tl.int64) * stride_dob + tok0.to(tl.int64) * stride_dot + h * stride_doh
               + offs_m0[:, None] * stride_dot + offs_d[None, :])
    o_ptrs = Out + out_base + offs_m0[:, None] * stride_ot + offs_d[None, :]
    dq_ptrs = DQ + out_base + offs_m0[:, None] * stride_ot + offs_d[None, :]
    lse_ptrs = Lse + h.to(tl.int64) * stride_lse_h + b * seq_stride + tok0 + offs_m0
    delta_ptrs = Delta + h.to(tl.int64) * stride_lse_h + b * seq_stride + tok0 + offs_m0
    qk_scale = sm_scale * 1.4426950408889634
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for start_m in range(0, seqlen, BLOCK_M):
        offs_m = start_m + offs_m0
        q_ok = offs_m < seqlen
        q = _load_rows(q_ptrs + start_m * stride_qt, q_ok, offs_d, HEAD_DIM, BLOCK_D)
        do = _load_rows(do_ptrs + start_m * stride_dot, q_ok, offs_d, HEAD_DIM, BLOCK_D)
        lse2 = tl.load(lse_ptrs + start_m, mask=q_ok, other=float("inf")) * 1.4426950408889634
        if DQ_MODE == 1:
            o = _load_rows(o_ptrs + start_m * stride_ot, q_ok, offs_d, HEAD_DIM, BLOCK_D)
            delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
        else:
            delta = tl.load(delta_ptrs + start_m, mask=q_ok, other=0.0)
        # transposed scores: rows = keys, columns = queries; rows past seqlen (q = 0, lse = inf) give pT = 0
        pT = tl.math.exp2(_dot(k, tl.trans(q), DOT_FP32) * qk_scale - lse2[None, :])  # (BLOCK_N, BLOCK_M)
        if HAS_KPM:
            pT = tl.where(k_ok[:, None], pT, 0.0)
        dpT = _dot(v, tl.trans(do), DOT_FP32)  # dP of the dropped probabilities
        if IS_DROPOUT:
            keepT = _dropout_keep_t(seed, h, row_lo, row_hi, offs_m, start_n, DROP_THRESH, BLOCK_M, BLOCK_N,
                                    DROP_GROUP)
            pdT = tl.where(keepT, pT * drop_scale, 0.0)
            dpT = tl.where(keepT, dpT * drop_scale, 0.0)
        else:
            pdT = pT
        dv += _dot(pdT.to(do.dtype), do, DOT_FP32)
        dsT = pT * (dpT - delta[None, :])
        dk += _dot(dsT.to(q.dtype), q, DOT_FP32)
        if DQ_MODE == 1:
            dq = _dot(tl.trans(dsT).to(k.dtype), k, DOT_FP32) * sm_scale
            _store_rows(dq_ptrs + start_m * stride_ot, dq.to(DQ.dtype.element_ty), offs_m < store_lim,
                        offs_d, HEAD_DIM, BLOCK_D)
        elif DQ_MODE == 2:
            dq = _dot(tl.trans(dsT).to(k.dtype), k, DOT_FP32) * sm_scale
            tl.atomic_add(dq_ptrs + start_m * stride_ot, dq, mask=q_ok[:, None] & (offs_d[None, :] < HEAD_DIM),
                          sem="relaxed")  # only the sum matters: no ordering
    if DQ_MODE == 1 and not VARLEN:  # zero dq of the padded query blocks the loop skipped
        for start_m in range(tl.cdiv(seqlen, BLOCK_M) * BLOCK_M, seq_stride, BLOCK_M):
            _store_rows(dq_ptrs + start_m * stride_ot, tl.zeros([BLOCK_M, BLOCK_D], DQ.dtype.element_ty),
                        start_m + offs_m0 < store_lim, offs_d, HEAD_DIM, BLOCK_D)
    row_ok = offs_n < seqlen
    dk = tl.where(row_ok[:, None], dk * sm_scale, 0.0)
    dv = tl.where(row_ok[:, None], dv, 0.0)
    _store_rows(dk_ptrs, dk.to(DK.dtype.element_ty), offs_n < store_lim, offs_d, HEAD_DIM, BLOCK_D)
    _store_rows(dv_ptrs, dv.to(DV.dtype.element_ty), offs_n < store_lim, offs_d, HEAD_DIM, BLOCK_D)


@triton.jit(do_not_specialize=["DROP_THRESH", "stride_lse_h", "seq_stride", "max_seqlen"])
def _attn_bwd_dq_kernel(
    Q, K, V, DO,  # like q
    DQ,  # like q (fresh, contiguous)
    Lse, Delta,  # (nh, R) fp32
    CuSeqlens, SeqLens, Kpm, Seed, RowIds,
    sm_scale, DROP_THRESH, drop_scale,
    stride_qb, stride_qt, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh,
    stride_ob, stride_ot, stride_oh,  # DQ
    stride_dob, stride_dot, stride_doh,
    stride_kpm_b, stride_lse_h, nheads, seq_stride, max_seqlen, SEQ_BUCKET,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, VARLEN: tl.constexpr, HAS_KPM: tl.constexpr,
    IS_DROPOUT: tl.constexpr, HAS_ROW_IDS: tl.constexpr, DOT_FP32: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, DROP_GROUP: tl.constexpr,
):
    """One program per (query block, batch * head): dq of BLOCK_M queries from a loop over all key blocks.
    Keys past seqlen load as k = v = 0, so they add nothing to dq and need no mask."""
    pid_m, b, h = _program_coords(tl.program_id(0), max_seqlen, nheads, BLOCK_M)
    seed, row_lo, row_hi = _dropout_stream(Seed, RowIds, b, IS_DROPOUT, HAS_ROW_IDS)
    tok0, seqlen = _seq_bounds(CuSeqlens, SeqLens, b, VARLEN)
    store_lim = seqlen if VARLEN else seq_stride
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    dq_ptrs = (DQ + b.to(tl.int64) * stride_ob + tok0.to(tl.int64) * stride_ot + h * stride_oh
               + offs_m[:, None] * stride_ot + offs_d[None, :])
    if start_m >= seqlen:
        if not VARLEN:
            _store_rows(dq_ptrs, tl.zeros([BLOCK_M, BLOCK_D], DQ.dtype.element_ty), offs_m < store_lim, offs_d,
                        HEAD_DIM, BLOCK_D)
        return
    q_ok = offs_m < seqlen
    q = _load_rows(Q + b.to(tl.int64) * stride_qb + tok0.to(tl.int64) * stride_qt + h * stride_qh
                   + offs_m[:, None] * stride_qt + offs_d[None, :], q_ok, offs_d, HEAD_DIM, BLOCK_D)
    do = _load_rows(DO + b.to(tl.int64) * stride_dob + tok0.to(tl.int64) * stride_dot + h * stride_doh
                    + offs_m[:, None] * stride_dot + offs_d[None, :], q_ok, offs_d, HEAD_DIM, BLOCK_D)
    lse2 = tl.load(Lse + h.to(tl.int64) * stride_lse_h + b * seq_stride + tok0 + offs_m, mask=q_ok,
                   other=float("inf")) * 1.4426950408889634
    delta = tl.load(Delta + h.to(tl.int64) * stride_lse_h + b * seq_stride + tok0 + offs_m, mask=q_ok, other=0.0)
    k_ptrs = (K + b.to(tl.int64) * stride_kb + tok0.to(tl.int64) * stride_kt + h * stride_kh
              + offs_n0[:, None] * stride_kt + offs_d[None, :])
    v_ptrs = (V + b.to(tl.int64) * stride_vb + tok0.to(tl.int64) * stride_vt + h * stride_vh
              + offs_n0[:, None] * stride_vt + offs_d[None, :])
    dq = _attn_dq_inner(tl.zeros([BLOCK_M, BLOCK_D], tl.float32), q, do, lse2, delta, k_ptrs, v_ptrs,
                        Kpm + b.to(tl.int64) * stride_kpm_b + offs_n0, seqlen, offs_m, offs_n0, offs_d, seed, h,
                        row_lo, row_hi, DROP_THRESH, drop_scale, sm_scale * 1.4426950408889634, stride_kt, stride_vt,
                        HEAD_DIM, BLOCK_D, HAS_KPM, IS_DROPOUT, DOT_FP32, BLOCK_M, BLOCK_N, DROP_GROUP)
    _store_rows(dq_ptrs, (dq * sm_scale).to(DQ.dtype.element_ty), offs_m < store_lim, offs_d, HEAD_DIM, BLOCK_D)


# ---- configs -------------------------------------------------------------------------------------------------
# GPU: each list is autotuned once per (head dim, power-of-2 sequence bucket, dtype); the padded / unpadded / dropout
# variants reuse the winner (they compile, but do not re-tune). The first entry of each list is the one launched with
# autotune=False (quick checks that must not spend minutes compiling). The interpreter gets one config (multi-config
# autotune fails there) with 64-blocks (interpreter speed is per program, so big blocks).
_KEY = ["HEAD_DIM", "SEQ_BUCKET"]


def _cfg(num_warps, num_stages, **blocks):
    return triton.Config(blocks, num_warps=num_warps, num_stages=num_stages)


# The GPU lists: none of them spills registers on sm_90 at d = 64 (BERT-base / -large) in the variants the GPU launches
# (training's: dropout with per-sample row ids, padded and unpadded, bf16 and fp16; evaluation's: no dropout), with the
# launcher's 16-byte / divisible-by-16 specialisation, on triton 3.6 and 3.9 (`python -m bertforge.kernels.compile_check
# --spills --head-dim 64`; tests/kernels/test_compile_sm90.py). Dropped for spilling: forward 4 warps 128x64 and 8 warps
# 128x128; fused backward 4 warps (BLOCK_M 64, 32), 8 warps 2 stages BLOCK_M 64 and 8 warps 1 stage BLOCK_M 64 (255
# registers + stack with row ids); dk/dv 4 warps 32x128 and 8 warps 64x128 (atomic dq with dropout). At d = 128 (no BERT
# size) 15 of 64 variants still spill, mostly the backward with dropout: a d = 128 model needs its own lists.
GPU_CONFIGS = {
    "fwd": [_cfg(8, 3, BLOCK_M=128, BLOCK_N=64), _cfg(4, 3, BLOCK_M=64, BLOCK_N=64), _cfg(8, 3, BLOCK_M=64, BLOCK_N=64)],
    # BLOCK_N: the S bucket. No BLOCK_M=64: at d = 64, S = 128 with per-sample dropout row ids it needs 255 registers
    # and spills (sm_90, triton 3.6; python -m bertforge.kernels.compile_check --spills)
    "bwd_fused": [_cfg(8, 2, BLOCK_M=32), _cfg(8, 1, BLOCK_M=32), _cfg(8, 2, BLOCK_M=16)],
    "bwd_dkdv": [_cfg(8, 2, BLOCK_M=64, BLOCK_N=64), _cfg(8, 2, BLOCK_M=32, BLOCK_N=128),
                 _cfg(8, 1, BLOCK_M=32, BLOCK_N=128)],
    "bwd_dq": [_cfg(8, 2, BLOCK_M=128, BLOCK_N=64), _cfg(4, 2, BLOCK_M=64, BLOCK_N=64),
               _cfg(4, 2, BLOCK_M=64, BLOCK_N=32)],
}
GPU_FUSED_MAX_SEQLEN = {32: 128, 64: 128, 128: 64}  # one key block per sequence: K, V, dK, dV stay in registers

if is_interpreting():
    _FWD_CONFIGS = [_cfg(4, 1, BLOCK_M=64, BLOCK_N=64)]
    _BWD_FUSED_CONFIGS = [_cfg(4, 1, BLOCK_M=64)]
    _BWD_DKDV_CONFIGS = [_cfg(4, 1, BLOCK_M=64, BLOCK_N=64)]
    _BWD_DQ_CONFIGS = [_cfg(4, 1, BLOCK_M=64, BLOCK_N=64)]
    _FUSED_MAX_SEQLEN = {32: 64, 64: 64, 128: 64}
else:
    _FWD_CONFIGS, _BWD_FUSED_CONFIGS = GPU_CONFIGS["fwd"], GPU_CONFIGS["bwd_fused"]
    _BWD_DKDV_CONFIGS, _BWD_DQ_CONFIGS = GPU_CONFIGS["bwd_dkdv"], GPU_CONFIGS["bwd_dq"]
    _FUSED_MAX_SEQLEN = GPU_FUSED_MAX_SEQLEN

_attn_fwd = triton.autotune(_FWD_CONFIGS, key=_KEY)(_attn_fwd_kernel)
_attn_bwd_fused = triton.autotune(_BWD_FUSED_CONFIGS, key=_KEY + ["BLOCK_N"])(_attn_bwd_dkdv_kernel)
_attn_bwd_dkdv = triton.autotune(_BWD_DKDV_CONFIGS, key=_KEY)(_attn_bwd_dkdv_kernel)
_attn_bwd_dkdv_atomic = triton.autotune(_BWD_DKDV_CONFIGS, key=_KEY, reset_to_zero=["DQ"])(_attn_bwd_dkdv_kernel)
_attn_bwd_dq = triton.autotune(_BWD_DQ_CONFIGS, key=_KEY)(_attn_bwd_dq_kernel)


def _launch(tuner, kind, grid, autotune, *args, **kwargs):
    """Run `tuner` (config list GPU_CONFIGS[kind]) over its configs (autotune True), with the list's first config
    (False: no tuning time), or with the triton.Config autotune[kind] of a dict (checks of every config; kinds not
    in the dict take their first config)."""
    if autotune is True:
        return tuner[grid](*args, **kwargs)
    cfg = autotune.get(kind, tuner.configs[0]) if isinstance(autotune, dict) else tuner.configs[0]
    return tuner.fn[grid](*args, **kwargs, **cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)


def launch_grid(n_blocks: int, batch: int, nheads: int) -> tuple[int]:
    """The 1-D grid of n_blocks sequence blocks x batch x nheads programs (grid axis 0 holds up to 2^31 - 1)."""
    n = n_blocks * batch * nheads
    if n >= 2**31:
        raise ValueError(f"attention: {n_blocks} blocks x {batch} sequences x {nheads} heads = {n} programs, more "
                         "than a CUDA grid holds (2^31 - 1); split the batch")
    return (n,)


# ---- host launchers ------------------------------------------------------------------------------------------
def _prepare(q, key_padding_mask, cu_seqlens, max_seqlen):
    """-> (varlen, batch, max_seqlen, seq_stride, R, cu_seqlens or dummy, seqlens or dummy, kpm uint8 or dummy).
    ValueError for a max_seqlen below the longest sequence of host cu_seqlens (the grid would miss blocks)."""
    device = q.device
    dummy = torch.empty(1, dtype=torch.int32, device=device)
    if cu_seqlens is not None:
        if key_padding_mask is not None:
            raise ValueError("attention: pass either key_padding_mask (padded) or cu_seqlens (unpadded), not both")
        if q.dim() != 3:
            raise ValueError(f"attention: unpadded q must be (total, nh, d), got {tuple(q.shape)}")
        if max_seqlen is None:
            max_seqlen = max_seqlen_of(cu_seqlens)
        elif cu_seqlens.device.type == "cpu" and int(max_seqlen) < max_seqlen_of(cu_seqlens):  # a GPU: unchecked
            raise ValueError(f"attention: max_seqlen={max_seqlen} is below the longest sequence "
                             f"({max_seqlen_of(cu_seqlens)}); pass at least that or None to read it from cu_seqlens")
        cu = cu_seqlens.to(device=device, dtype=torch.int32).contiguous()
        return True, cu.numel() - 1, int(max_seqlen), 0, q.shape[0], cu, dummy, dummy.to(torch.uint8)
    if q.dim() != 4:
        raise ValueError(f"attention: padded q must be (B, S, nh, d), got {tuple(q.shape)}")
    batch, seq = q.shape[0], q.shape[1]
    if key_padding_mask is None:
        seqlens = torch.full((batch,), seq, dtype=torch.int32, device=device)
        kpm = dummy.to(torch.uint8)
    else:
        if key_padding_mask.shape != (batch, seq):
            raise ValueError(f"attention: key_padding_mask must be {(batch, seq)}, got {tuple(key_padding_mask.shape)}")
        kpm = key_padding_mask.to(device=device, dtype=torch.bool).contiguous().view(torch.uint8)
        positions = torch.arange(1, seq + 1, dtype=torch.int32, device=device)
        seqlens = (kpm.to(torch.int32) * positions).amax(dim=1).to(torch.int32)  # last real position + 1
    return False, batch, seq, seq, batch * seq, dummy, seqlens, kpm


def _strides(t, varlen):
    """(batch, token, head) strides; the batch stride is 0 for the unpadded layout (cu_seqlens gives the offset)."""
    return (0, t.stride(0), t.stride(1)) if varlen else (t.stride(0), t.stride(1), t.stride(2))


def _last_contiguous(t):
    return t if t.stride(-1) == 1 else t.contiguous()


def _dropout_args(dropout_p, seed, row_ids, batch, device, dropout_bits):
    """-> (seed (1,) int64 on device, row ids (B,) int64 or a dummy, threshold, scale)."""
    dummy = torch.zeros(1, dtype=torch.int64, device=device)
    if dropout_p <= 0.0:
        return dummy, dummy, 0, 1.0
    if not dropout_p < 1.0:
        raise ValueError(f"attention: dropout_p must be in [0, 1), got {dropout_p}")
    if not isinstance(seed, torch.Tensor):
        seed = torch.tensor([int(seed)], dtype=torch.int64)
    if seed.shape != (1,) or seed.dtype != torch.int64:
        raise ValueError(f"attention: seed must be a (1,) int64 tensor, got {tuple(seed.shape)} {seed.dtype}")
    if row_ids is not None:
        if row_ids.shape != (batch,) or row_ids.dtype != torch.int64:
            raise ValueError(f"attention: row_ids must be ({batch},) int64, got {tuple(row_ids.shape)} {row_ids.dtype}")
        dummy = row_ids.to(device).contiguous()
    return (seed.to(device), dummy, dropout_threshold(dropout_p, dropout_bits),
            dropout_scale(dropout_p, dropout_bits))


def _common_meta(q, varlen, kpm_given, dropout_p, max_seqlen, row_ids, dropout_bits):
    head_dim = q.shape[-1]
    if head_dim > 128:
        raise ValueError(f"attention: head_dim <= 128 supported, got {head_dim}")
    if dropout_p > 0 and max_seqlen > _MAX_DROPOUT_SEQLEN:
        raise ValueError(f"attention: dropout supports max_seqlen <= {_MAX_DROPOUT_SEQLEN}, got {max_seqlen}")
    return dict(HEAD_DIM=head_dim, BLOCK_D=max(16, next_power_of_2(head_dim)), VARLEN=varlen, HAS_KPM=kpm_given,
                IS_DROPOUT=dropout_p > 0, HAS_ROW_IDS=dropout_p > 0 and row_ids is not None,
                DOT_FP32=is_interpreting() and q.dtype == torch.bfloat16, DROP_GROUP=dropout_group(dropout_bits))


def attention_forward(q, k, v, key_padding_mask=None, cu_seqlens=None, max_seqlen=None, dropout_p=0.0,
                      softmax_scale=None, seed=0, autotune=True, row_ids=None, dropout_bits=8):
    """-> (out like q, lse (nh, R) fp32). seed: Philox key of the dropout mask, an int or a (1,) int64 tensor
    (ignored when dropout_p == 0); row_ids: None or (B,) int64 Philox row ids; dropout_bits: 8 or 24 (module
    docstring). autotune: tune the GPU configs (False: each list's first config; a dict {kind: triton.Config} with
    kinds of GPU_CONFIGS: those)."""
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"attention: q, k, v must have the same shape, got {q.shape}, {k.shape}, {v.shape}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"attention: q, k, v must have the same dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    q, k, v = (_last_contiguous(t) for t in (q, k, v))
    varlen, batch, max_seqlen, seq_stride, rows, cu, seqlens, kpm = _prepare(q, key_padding_mask, cu_seqlens,
                                                                            max_seqlen)
    nheads = q.shape[-2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty((nheads, rows), dtype=torch.float32, device=q.device)
    if q.numel() == 0 or batch == 0 or max_seqlen == 0:
        return out.zero_(), lse
    meta = _common_meta(q, varlen, key_padding_mask is not None, dropout_p, max_seqlen, row_ids, dropout_bits)
    seed, row_ids, thresh, drop_scale = _dropout_args(dropout_p, seed, row_ids, batch, q.device, dropout_bits)
    grid = lambda META: launch_grid(triton.cdiv(max_seqlen, META["BLOCK_M"]), batch, nheads)  # noqa: E731
    _launch(
        _attn_fwd, "fwd", grid, autotune, q, k, v, out, lse, cu, seqlens, kpm, seed, row_ids, scale, thresh, drop_scale,
        *_strides(q, varlen), *_strides(k, varlen), *_strides(v, varlen), *_strides(out, varlen),
        kpm.stride(0) if kpm.dim() == 2 else 0, rows, nheads, seq_stride, max_seqlen,
        max(16, next_power_of_2(max_seqlen)), **meta,
    )
    return out, lse


def attention_backward(dout, q, k, v, out, lse, key_padding_mask=None, cu_seqlens=None, max_seqlen=None,
                       dropout_p=0.0, softmax_scale=None, seed=0, dq_atomic=False, autotune=True, row_ids=None,
                       dropout_bits=8):
    """-> (dq, dk, dv) like q. Arguments as attention_forward, plus its out and lse and the same seed, row_ids and
    dropout_bits.
    dq_atomic (sequences longer than one key block): accumulate dq with fp32 atomics inside the dk/dv kernel
    instead of a separate deterministic dq kernel."""
    q, k, v, out, dout = (_last_contiguous(t) for t in (q, k, v, out, dout))
    varlen, batch, max_seqlen, seq_stride, rows, cu, seqlens, kpm = _prepare(q, key_padding_mask, cu_seqlens,
                                                                            max_seqlen)
    nheads, head_dim = q.shape[-2], q.shape[-1]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(head_dim)
    dq, dk, dv = (torch.empty_like(q, memory_format=torch.contiguous_format) for _ in range(3))
    if q.numel() == 0 or batch == 0 or max_seqlen == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    meta = _common_meta(q, varlen, key_padding_mask is not None, dropout_p, max_seqlen, row_ids, dropout_bits)
    seed, row_ids, thresh, drop_scale = _dropout_args(dropout_p, seed, row_ids, batch, q.device, dropout_bits)
    bucket = max(16, next_power_of_2(max_seqlen))
    args = (cu, seqlens, kpm, seed, row_ids, scale, thresh, drop_scale, *_strides(q, varlen), *_strides(k, varlen),
            *_strides(v, varlen), *_strides(dq, varlen), *_strides(dout, varlen),
            kpm.stride(0) if kpm.dim() == 2 else 0, rows, nheads, seq_stride, max_seqlen, bucket)
    fused_limit = _FUSED_MAX_SEQLEN[min(128, max(32, next_power_of_2(head_dim)))]
    if max_seqlen <= fused_limit:  # one key block per sequence: dq, dk, dv from one program per (batch, head)
        _launch(_attn_bwd_fused, "bwd_fused", launch_grid(1, batch, nheads), autotune, q, k, v, out, dout, dq, dk, dv, lse, lse, *args,
                DQ_MODE=1, BLOCK_N=bucket, **meta)
        return dq, dk, dv
    delta = torch.empty_like(lse)
    _attn_bwd_preprocess_kernel[launch_grid(triton.cdiv(max_seqlen, 64), batch, nheads)](
        out, dout, delta, cu, seqlens, *_strides(out, varlen), *_strides(dout, varlen), rows, nheads, seq_stride,
        max_seqlen, HEAD_DIM=head_dim, BLOCK_D=meta["BLOCK_D"], VARLEN=varlen, BLOCK_M=64)
    grid_n = lambda META: launch_grid(triton.cdiv(max_seqlen, META["BLOCK_N"]), batch, nheads)  # noqa: E731
    if dq_atomic:
        dq_acc = torch.zeros(dq.shape, dtype=torch.float32, device=dq.device)  # same (contiguous) strides as dq
        _launch(_attn_bwd_dkdv_atomic, "bwd_dkdv", grid_n, autotune, q, k, v, out, dout, dq_acc, dk, dv, lse, delta, *args,
                DQ_MODE=2, **meta)
        return dq.copy_(dq_acc), dk, dv
    _launch(_attn_bwd_dkdv, "bwd_dkdv", grid_n, autotune, q, k, v, out, dout, dq, dk, dv, lse, delta, *args, DQ_MODE=0, **meta)
    grid_m = lambda META: launch_grid(triton.cdiv(max_seqlen, META["BLOCK_M"]), batch, nheads)  # noqa: E731
    _launch(_attn_bwd_dq, "bwd_dq", grid_m, autotune, q, k, v, dout, dq, lse, delta, *args, **meta)
    return dq, dk, dv


# ---- custom ops (torch.compile traces through them via the fake impls) -----------------------------------------
def _lse_rows(q: torch.Tensor, cu_seqlens: Optional[torch.Tensor]) -> int:
    return q.shape[0] if cu_seqlens is not None else q.shape[0] * q.shape[1]


@torch.library.custom_op("bertforge::attention_fwd", mutates_args=())
def _attention_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: Optional[torch.Tensor],
                      cu_seqlens: Optional[torch.Tensor], max_seqlen: int, dropout_p: float, softmax_scale: float,
                      seed: torch.Tensor, row_ids: Optional[torch.Tensor], autotune: bool = True,
                      dropout_bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (out, lse (nh, R) fp32). seed: (1,) int64 on q's device (the backward gets the same tensor)."""
    return attention_forward(q, k, v, key_padding_mask, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed,
                             autotune, row_ids, dropout_bits)


@_attention_fwd_op.register_fake
def _(q, k, v, key_padding_mask, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, row_ids, autotune=True,
      dropout_bits=8):
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = q.new_empty((q.shape[-2], _lse_rows(q, cu_seqlens)), dtype=torch.float32)
    return out, lse


@torch.library.custom_op("bertforge::attention_bwd", mutates_args=())
def _attention_bwd_op(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                      lse: torch.Tensor, seed: torch.Tensor, row_ids: Optional[torch.Tensor],
                      key_padding_mask: Optional[torch.Tensor], cu_seqlens: Optional[torch.Tensor], max_seqlen: int,
                      dropout_p: float, softmax_scale: float, dq_atomic: bool = False, autotune: bool = True,
                      dropout_bits: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return attention_backward(dout, q, k, v, out, lse, key_padding_mask, cu_seqlens, max_seqlen, dropout_p,
                              softmax_scale, seed, dq_atomic, autotune, row_ids, dropout_bits)


@_attention_bwd_op.register_fake
def _(dout, q, k, v, out, lse, seed, row_ids, key_padding_mask, cu_seqlens, max_seqlen, dropout_p, softmax_scale,
      dq_atomic=False, autotune=True, dropout_bits=8):
    return tuple(torch.empty_like(q, memory_format=torch.contiguous_format) for _ in range(3))


class AttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, key_padding_mask, cu_seqlens, max_seqlen, dropout_p, softmax_scale, autotune,
                dq_atomic, seed, row_ids, dropout_bits):
        out, lse = torch.ops.bertforge.attention_fwd(q, k, v, key_padding_mask, cu_seqlens, max_seqlen, dropout_p,
                                                     softmax_scale, seed, row_ids, autotune, dropout_bits)
        ctx.save_for_backward(q, k, v, out, lse, seed, row_ids, key_padding_mask, cu_seqlens)
        ctx.max_seqlen, ctx.dropout_p, ctx.softmax_scale = max_seqlen, dropout_p, softmax_scale
        ctx.autotune, ctx.dq_atomic, ctx.dropout_bits = autotune, dq_atomic, dropout_bits
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse, seed, row_ids, key_padding_mask, cu_seqlens = ctx.saved_tensors
        dq, dk, dv = torch.ops.bertforge.attention_bwd(dout, q, k, v, out, lse, seed, row_ids, key_padding_mask,
                                                       cu_seqlens, ctx.max_seqlen, ctx.dropout_p, ctx.softmax_scale,
                                                       ctx.dq_atomic, ctx.autotune, ctx.dropout_bits)
        return dq, dk, dv, None, None, None, None, None, None, None, None, None, None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, key_padding_mask: Optional[torch.Tensor] = None,
              cu_seqlens: Optional[torch.Tensor] = None, max_seqlen: Optional[int] = None, dropout_p: float = 0.0,
              softmax_scale: Optional[float] = None, autotune: bool = True, dq_atomic: bool = False,
              seed: Optional[torch.Tensor] = None, row_ids: Optional[torch.Tensor] = None,
              dropout_bits: int = 8) -> torch.Tensor:
    """Bidirectional attention. Padded: q, k, v (B, S, nh, d), key_padding_mask (B, S) bool (True = real) or None.
    Unpadded: q, k, v (total, nh, d), cu_seqlens (B + 1,) int32, max_seqlen (computed, with a device sync, if None).
    dropout_p: attention-probability dropout inside the kernel (pass 0.0 in eval), applied as
    reference.quantized_dropout_p(dropout_p, dropout_bits) (0.1 -> 26/256 at 8 bits). dropout_bits: 8 (16 keys a
    Philox call) or 24 (4). Returns q's layout; padded query rows at or after each row's last real token are zero.
    autotune: tune each kernel's GPU config list on first use per (head dim, sequence bucket) (False: launch the
    list's first config, no tuning time). dq_atomic: sequences longer than one key block accumulate dq with fp32
    atomics in the dk/dv kernel (5 GEMMs instead of 7, not bit-reproducible) instead of the deterministic dq kernel.
    seed: the dropout's Philox key, (1,) int64 (default: drawn on q's device, reproducible under torch.manual_seed).
    row_ids: (B,) int64 Philox row ids of the sequences (default: 0..B-1; see the module docstring)."""
    if softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(q.shape[-1])
    if cu_seqlens is not None:
        if max_seqlen is None:
            max_seqlen = max_seqlen_of(cu_seqlens)
    else:
        max_seqlen = q.shape[1] if q.dim() == 4 else 0
    if seed is None:
        seed = draw_seed_tensor(q.device) if dropout_p > 0 else torch.zeros(1, dtype=torch.int64, device=q.device)
    if dropout_p > 0:
        dropout_threshold(dropout_p, dropout_bits)  # refuses a p that keeps nothing, before the op is recorded
    return AttentionFunction.apply(q, k, v, key_padding_mask, cu_seqlens, int(max_seqlen), float(dropout_p),
                                   float(softmax_scale), bool(autotune), bool(dq_atomic), seed, row_ids,
                                   check_dropout_bits(dropout_bits))
