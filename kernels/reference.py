"""Pure-torch references of every kernel in this package: the CPU path (engine/ops.py runs them for kernels='none')
and the test oracle. This module never imports Triton, so a machine without it runs everything here.

Layouts (FlashAttention's): padded q/k/v are (B, S, nh, d) with key_padding_mask (B, S) bool, True = real token;
unpadded ("varlen") q/k/v are (total, nh, d) with cu_seqlens (B + 1,) int32 and max_seqlen.

Options only the oracle uses (each defaults to the CPU path's behaviour): `upcast` computes in fp64 (fp32 for
attention), `keep_mask` / `dropout_mask` replay a kernel's dropout mask, `uniforms` replays the masking kernel's
Philox draws.

Dropout with a `seed` (and optional `row_ids`) draws the kernels' own Philox masks (below), so the CPU path and the
Triton path drop the same elements; without one, torch's generator draws them (F.dropout, SDPA)."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from bertforge.kernels.host_buffers import BufferPool
from bertforge.kernels.padding import pad_input, padding_mask_of, seqlens_of, token_sequence_ids

IGNORE_INDEX = -100  # label of positions without an MLM target (Hugging Face's convention)


# ---- attention ---------------------------------------------------------------------------------------------------
def _padded_from_varlen(q, k, v, cu_seqlens, max_seqlen):
    """(total, nh, d) x 3 -> ((B, S, nh, d) x 3 zero-padded, key_padding_mask (B, S), indices (total,) into B * S)."""
    if q.dim() != 3:
        raise ValueError(f"attention: unpadded q must be (total, nh, d), got {tuple(q.shape)}")
    mask, indices = padding_mask_of(cu_seqlens.to(q.device), max_seqlen)  # (B, S), (total,)
    batch, seq = mask.shape
    padded = (pad_input(t.flatten(1), indices, batch, seq).unflatten(-1, t.shape[1:]) for t in (q, k, v))
    return *padded, mask, indices


# The unpadded layout on CPU runs one sequence at a time (`attention_varlen_ref`): no re-padding, no mask, sum L_i^2
# score entries instead of B * max_seqlen^2. Off (False): it is padded to (B, max_seqlen) and run as the padded
# layout, as it always is on a GPU (no host sync for the lengths) and under torch.compile (no per-sequence graph).
# Both give the same results to fp32 rounding (tests/kernels/test_attention_reference.py).
VARLEN_PER_SEQUENCE_ON_CPU = True


def attention_ref(q, k, v, *, key_padding_mask=None, cu_seqlens=None, max_seqlen=None, dropout_p=0.0,
                  softmax_scale=None, seed=None, row_ids=None, dropout_bits=8):
    """Bidirectional attention (the CPU path). Padded: torch's SDPA. Unpadded: one sequence at a time on CPU
    (`attention_varlen_ref`), else padded to (B, max_seqlen) first. Returns q's layout. With dropout_p > 0 torch
    draws its own mask, unless a Philox `seed` (int or (1,) int64 tensor) is given: then the kernel's mask for that
    seed and `row_ids` (B,) (`attention_dropout_keep_ref`) is drawn and applied by the naive attention (SDPA cannot
    take a dropout mask). Either way the probability applied is quantized_dropout_p(dropout_p, dropout_bits)."""
    if cu_seqlens is not None:
        if key_padding_mask is not None:
            raise ValueError("attention: pass either key_padding_mask (padded) or cu_seqlens (unpadded), not both")
        if VARLEN_PER_SEQUENCE_ON_CPU and q.device.type == "cpu" and not torch.compiler.is_compiling():
            return attention_varlen_ref(q, k, v, cu_seqlens, dropout_p=dropout_p, softmax_scale=softmax_scale,
                                        seed=seed, row_ids=row_ids, dropout_bits=dropout_bits)
        qp, kp, vp, mask, indices = _padded_from_varlen(q, k, v, cu_seqlens, max_seqlen)
        out = attention_ref(qp, kp, vp, key_padding_mask=mask, dropout_p=dropout_p, softmax_scale=softmax_scale,
                            seed=seed, row_ids=row_ids, dropout_bits=dropout_bits)
        return out.flatten(0, 1)[indices]
    if q.dim() != 4:
        raise ValueError(f"attention: padded q must be (B, S, nh, d), got {tuple(q.shape)}")
    if dropout_p > 0 and seed is not None:
        B, S, nh, _ = q.shape
        keep = attention_dropout_keep_ref(seed, B, nh, S, dropout_p, row_ids, device=q.device,
                                          dropout_bits=dropout_bits)
        return attention_naive_ref(q, k, v, key_padding_mask=key_padding_mask, dropout_p=dropout_p,
                                   softmax_scale=softmax_scale, dropout_mask=keep, dropout_bits=dropout_bits)
    attn_mask = None
    if key_padding_mask is not None:
        attn_mask = key_padding_mask[:, None, None, :].to(torch.bool)  # (B, 1, 1, S) broadcast over heads, queries
    p_q = quantized_dropout_p(dropout_p, dropout_bits) if dropout_p > 0 else 0.0
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=attn_mask,
                                         dropout_p=p_q, scale=softmax_scale)  # (B, nh, S, d)
    return out.transpose(1, 2)


def attention_varlen_ref(q, k, v, cu_seqlens, *, dropout_p=0.0, softmax_scale=None, seed=None, row_ids=None,
                         dropout_bits=8):
    """Unpadded attention one sequence at a time: q, k, v (total, nh, d) (any strides, e.g. views of one packed
    QKV buffer), cu_seqlens (B + 1,) int32 -> (total, nh, d). Per sequence i of length L_i: softmax(q k^T * scale)
    (L_i, L_i) per head, in fp32 for lower-precision inputs, then dropout, then @ v; no padding token is computed or
    masked (on CPU, forward + backward at B 16, lengths uniform in [S/4, S], dropout 0.1, process CPU time: 2.1x
    padding + masked SDPA at MiniLM's 12 heads x 32, S 128, 1.6x at the tiny preset's 2 x 64, S 64; forward
    alone 2.6x and 3x). Forward and backward are one autograd node (`_VarlenAttention`) that writes each sequence's
    rows of q's layout directly.
    Dropout: torch's generator (one Bernoulli draw for all sequences), or with a Philox `seed` the kernel's mask for
    `row_ids` (B,) at the same (query, key) positions as the padded layout (`attention_dropout_keep_ref`), so both
    layouts drop alike. The probability applied is quantized_dropout_p(dropout_p, dropout_bits), as everywhere.
    Reads cu_seqlens on the host: a sync on a GPU (attention_ref uses it on CPU only)."""
    if q.dim() != 3:
        raise ValueError(f"attention: unpadded q must be (total, nh, d), got {tuple(q.shape)}")
    starts = cu_seqlens.tolist()
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    lengths = [b - a for a, b in zip(starts, starts[1:])]
    if not lengths:
        return q.new_zeros(q.shape)
    nh = q.shape[1]
    p_q = quantized_dropout_p(dropout_p, dropout_bits) if dropout_p > 0 else 0.0
    keyed = p_q > 0 and seed is not None
    if keyed and row_ids is not None and row_ids.shape != (len(lengths),):
        raise ValueError(f"row_ids must be ({len(lengths)},) non-negative int64")
    multipliers = None  # per sequence (nh, L, L) fp32: 0 where dropped, 1 / (1 - p_q) where kept
    if keyed:  # sequence i's block of the kernel's mask: positions within the sequence, its own row id
        multipliers = attention_varlen_dropout_multipliers(seed, lengths, nh, dropout_p, row_ids, device=q.device,
                                                           dropout_bits=dropout_bits)
    elif p_q > 0:  # torch's generator: one draw for every sequence's (nh, L, L) block
        drop = torch.empty(sum(nh * n * n for n in lengths), device=q.device, dtype=torch.float32)
        drop = drop.bernoulli_(1.0 - p_q).mul_(1.0 / (1.0 - p_q)).split([nh * n * n for n in lengths])
        multipliers = [m.view(nh, n, n) for m, n in zip(drop, lengths)]
    return _VarlenAttention.apply(q, k, v, lengths, scale, multipliers)


def _block_forward(q_block, k_block, v_block, multiplier):
    """One sequence's attention: scaled queries q_block (n, nh, d), k_block, v_block (L, nh, d), dropout multiplier
    (nh, n, L) fp32 or None -> (P = softmax(q k^T) (nh, n, L) fp32, output (n, nh, d) in v's dtype)."""
    p = torch.softmax(torch.bmm(q_block.transpose(0, 1), k_block.permute(1, 2, 0)), dim=-1, dtype=torch.float32)
    pd = p * multiplier if multiplier is not None else p
    return p, torch.bmm(pd.to(v_block.dtype), v_block.transpose(0, 1)).transpose(0, 1)


def _block_backward(do, p, multiplier, q_block, k_block, v_block, scale):
    """`_block_forward`'s backward: do (nh, n, d) in v's dtype, p (nh, n, L) fp32 -> (dq (n, nh, d), dk, dv (L, nh,
    d)): dv = P'^T dO, dP = (dO v^T) * M, dS = P * (dP - rowsum(dP * P)), dq = dS k * scale, dk = dS^T (q * scale)."""
    dt = v_block.dtype
    pd = p * multiplier if multiplier is not None else p
    dv = torch.bmm(pd.to(dt).transpose(1, 2), do).transpose(0, 1)
    dp = torch.bmm(do, v_block.permute(1, 2, 0)).float()  # (nh, n, L)
    if multiplier is not None:
        dp = dp.mul_(multiplier)
    ds = torch._softmax_backward_data(dp, p, -1, torch.float32).to(dt)
    dq = torch.bmm(ds, k_block.transpose(0, 1)).mul_(scale).transpose(0, 1)
    dk = torch.bmm(ds.transpose(1, 2), q_block.transpose(0, 1)).transpose(0, 1)
    return dq, dk, dv


def attention_varlen_rows_ref(q, k, v, cu_seqlens, q_rows, *, dropout_p=0.0, softmax_scale=None, seed=None,
                              row_ids=None, dropout_bits=8):
    """Unpadded attention for some query rows only (the last layer of pretraining on its masked rows and [CLS]):
    q (n, nh, d) the queries of the tokens at flat indices q_rows (n,) int64 into the total axis, in any order and
    any sequence; k, v (total, nh, d) every token's; cu_seqlens (B + 1,) int32 -> (n, nh, d), row r = what
    `attention_varlen_ref` gives at token q_rows[r]: per sequence softmax(q_i k_i^T * scale) (n_i, L_i) per head,
    the same dropout elements (keyed: the kernel's mask rows at those query positions; unkeyed: torch's draw), @ v_i.
    Keys and values of a sequence without a query row get zero gradients. CPU only (reads cu_seqlens and q_rows on
    the host). ValueError for q_rows outside [0, total), not (n,) or not int64 / int32."""
    if q.dim() != 3 or k.dim() != 3:
        raise ValueError(f"attention: q must be (n, nh, d) and k, v (total, nh, d), got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}")
    if q_rows.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"q_rows must be int64 or int32 token indices, got {q_rows.dtype}")
    rows = q_rows.to("cpu", torch.int64)
    cu = cu_seqlens.to("cpu", torch.int64)
    total, n_seq = int(cu[-1]), cu.numel() - 1
    if rows.shape != (q.shape[0],) or (rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= total)):
        raise ValueError(f"q_rows must be ({q.shape[0]},) token indices in [0, {total})")
    lengths = seqlens_of(cu).tolist()
    seq = token_sequence_ids(cu, total)[rows]  # (n,) each query's sequence
    order = torch.argsort(seq, stable=True)  # q's rows grouped by sequence
    counts = torch.bincount(seq, minlength=n_seq).tolist()
    positions = (rows - cu[seq])[order].split(counts)  # per sequence its queries' positions
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    nh, p_q = q.shape[1], quantized_dropout_p(dropout_p, dropout_bits) if dropout_p > 0 else 0.0
    multipliers = None
    if p_q > 0 and seed is not None:
        multipliers = attention_varlen_dropout_multipliers(seed, lengths, nh, dropout_p, row_ids, device=q.device,
                                                           dropout_bits=dropout_bits, queries=list(positions))
    elif p_q > 0:
        multipliers = [torch.empty(nh, c, L, device=q.device).bernoulli_(1.0 - p_q).mul_(1.0 / (1.0 - p_q))
                       for c, L in zip(counts, lengths)]
    return _VarlenRowsAttention.apply(q, k, v, lengths, counts, order, scale, multipliers)


class _VarlenRowsAttention(torch.autograd.Function):
    """`attention_varlen_rows_ref`'s forward and backward (as `_VarlenAttention`, per sequence on its query rows:
    scores (nh, n_i, L_i)); q's rows are taken and written through `order` (grouped by sequence)."""

    @staticmethod
    def forward(ctx, q, k, v, lengths, counts, order, scale, multipliers):
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)  # (n, nh, d)
        qs = q * scale
        probs, a, b = [], 0, 0
        for i, (L, c) in enumerate(zip(lengths, counts)):
            p = None
            if c:
                idx = order[b:b + c]
                p, out[idx] = _block_forward(qs[idx], k[a:a + L], v[a:a + L],
                                             multipliers[i] if multipliers is not None else None)
            probs.append(p)
            a, b = a + L, b + c
        ctx.lengths, ctx.counts, ctx.scale, ctx.multipliers, ctx.probs = lengths, counts, scale, multipliers, probs
        ctx.save_for_backward(qs, k, v, order)
        return out

    @staticmethod
    def backward(ctx, dout):
        qs, k, v, order = ctx.saved_tensors
        dq = torch.empty(qs.shape, dtype=qs.dtype, device=qs.device)
        dk, dv = torch.zeros_like(k), torch.zeros_like(v)  # a sequence without queries: zeros
        a = b = 0
        for i, (L, c) in enumerate(zip(ctx.lengths, ctx.counts)):
            if c:
                idx, toks = order[b:b + c], slice(a, a + L)
                m = ctx.multipliers[i] if ctx.multipliers is not None else None
                dq[idx], dk[toks], dv[toks] = _block_backward(dout[idx].transpose(0, 1).to(v.dtype), ctx.probs[i], m,
                                                              qs[idx], k[toks], v[toks], ctx.scale)
            a, b = a + L, b + c
        ctx.probs = ctx.multipliers = None
        return dq, dk, dv, None, None, None, None, None


def query_rows_supported(device: torch.device, unpadded: bool) -> bool:
    """Whether `attention_varlen_rows_ref` serves here (the CPU path's unpadded attention, outside torch.compile)."""
    return (unpadded and VARLEN_PER_SEQUENCE_ON_CPU and torch.device(device).type == "cpu"
            and not torch.compiler.is_compiling())


def keep_multiplier(keep: torch.Tensor, p_q: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Dropout keep flags (bool) -> the multiplier 0 / (1 / (1 - p_q)) in `dtype`, at least fp32 (one fast float
    multiply per use, where a bool operand or torch.where takes a slow path on CPU; never bf16 / fp16: 1 / (1 - p)
    is not such a number)."""
    return keep.to(torch.promote_types(dtype, torch.float32)).mul_(1.0 / (1.0 - p_q))


class _VarlenAttention(torch.autograd.Function):
    """Unpadded attention one sequence at a time with a hand-written backward (the CPU path): per sequence and head
    S = (q * scale) k^T, P = softmax(S) in fp32, P' = P * M (M the dropout multiplier or none), O = P' v; backward
    dv = P'^T dO, dP = (dO v^T) * M, dS = P * (dP - rowsum(dP * P)), dq = dS k * scale, dk = dS^T (q * scale). Each
    sequence's results are written straight into its rows of one (total, nh, d) buffer per output (autograd over
    per-sequence views would concatenate them again). Matmuls run in q's dtype, softmax and dS in fp32."""

    @staticmethod
    def forward(ctx, q, k, v, lengths, scale, multipliers):
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)  # (total, nh, d)
        qs = q * scale  # (total, nh, d), contiguous: dk needs it too
        probs, a = [], 0
        for i, n in enumerate(lengths):
            rows = slice(a, a + n)
            p, out[rows] = _block_forward(qs[rows], k[rows], v[rows],
                                          multipliers[i] if multipliers is not None else None)  # p (nh, L, L)
            probs.append(p)
            a += n
        ctx.lengths, ctx.scale, ctx.multipliers, ctx.probs = lengths, scale, multipliers, probs
        ctx.save_for_backward(qs, k, v)
        return out

    @staticmethod
    def backward(ctx, dout):
        qs, k, v = ctx.saved_tensors
        dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (qs, k, v))
        a = 0
        for i, n in enumerate(ctx.lengths):
            rows = slice(a, a + n)
            m = ctx.multipliers[i] if ctx.multipliers is not None else None
            dq[rows], dk[rows], dv[rows] = _block_backward(dout[rows].transpose(0, 1).to(v.dtype), ctx.probs[i], m,
                                                           qs[rows], k[rows], v[rows], ctx.scale)
            a += n
        ctx.probs = ctx.multipliers = None
        return dq, dk, dv, None, None, None


def attention_naive_ref(q, k, v, *, key_padding_mask=None, cu_seqlens=None, max_seqlen=None, dropout_p=0.0,
                        softmax_scale=None, dropout_mask=None, upcast=False, dropout_bits=8):
    """Attention that materialises the (B, nh, S, S) scores (the oracle of kernels/attention.py; SDPA can neither
    replay a dropout mask nor show plain torch's rounding in low precision). dropout_mask (B, nh, S, S) bool (the
    kernel's: `attention_dropout_keep_ref`) reproduces the kernel's dropout exactly; with dropout_p > 0 and
    no mask, torch draws its own. Kept probabilities are divided by 1 - quantized_dropout_p(dropout_p, dropout_bits).
    upcast computes in fp32 and casts back. Fully masked query rows output zeros."""
    if cu_seqlens is not None:
        qp, kp, vp, mask, indices = _padded_from_varlen(q, k, v, cu_seqlens, max_seqlen)
        out = attention_naive_ref(qp, kp, vp, key_padding_mask=mask, dropout_p=dropout_p, softmax_scale=softmax_scale,
                                  dropout_mask=dropout_mask, upcast=upcast, dropout_bits=dropout_bits)
        return out.flatten(0, 1)[indices]
    dtype = q.dtype
    if upcast:
        q, k, v = q.float(), k.float(), v.float()
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    scores = torch.einsum("bihd,bjhd->bhij", q, k) * scale  # (B, nh, S, S)
    if key_padding_mask is not None:
        scores = scores.masked_fill(~key_padding_mask.bool()[:, None, None, :], float("-inf"))
    p = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    if dropout_mask is not None:
        p = p * dropout_mask.to(p.dtype) / (1.0 - quantized_dropout_p(dropout_p, dropout_bits))
    elif dropout_p > 0:
        p = F.dropout(p, quantized_dropout_p(dropout_p, dropout_bits))
    out = torch.einsum("bhij,bjhd->bihd", p.to(v.dtype), v)
    return out.to(dtype)


# ---- dropout random numbers (the kernels' Philox streams, replayed in torch) ------------------------------------
# Every dropout kernel draws Philox-4x32-10 (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"; the
# round and key constants of triton.language.random) with key = the call's seed (int64: low word k0, high word k1)
# and a counter of four 32-bit words (c0, c1, c2, c3). One call yields 128 bits. How they become keep flags is set by
# `dropout_bits` (DROPOUT_BITS; 8 by default):
#   8:  each byte decides one element, so one call serves 16 elements (FlashAttention-2's rate): element 16c + t of a
#       row is byte t % 4 (bits 8 (t % 4) .. 8 (t % 4) + 7) of word t // 4 of counter c, i.e. the call's 16 bytes in
#       little-endian order; kept when that byte is >= dropout_threshold(p, 8).
#   24: each word decides one element, so one call serves 4: element 4c + w is word w of counter c, kept when its
#       top 24 bits (word >> 8) are >= dropout_threshold(p, 24).
# The threshold is t = round(p * 2^bits) (nearest, ties to even), so the probability applied is the quantised
# p_q = t / 2^bits (0.1 -> 26/256 = 0.1015625 at 8 bits; `quantized_dropout_p`), and kept values are scaled by
# 1 / (1 - p_q) = 2^bits / (2^bits - t) (`dropout_scale`): E[dropout(x)] = x exactly. FlashAttention-2 keeps a byte
# <= floor((1 - p) * 255) and scales by 1 / (1 - p), which is off by up to 1/256 in expectation; here the scale
# follows the keep rate. Every path that takes a dropout_p (the kernels, this reference, the C++ CPU path, torch's
# F.dropout / SDPA fallbacks below) applies p_q, never p itself.
# (c2, c3) is the 64-bit *row id*: by default the row's index in the call (the token row for the LayerNorm epilogue,
# the sequence b for attention); a caller may pass its own row ids (e.g. a global sample id) so that a row's mask does
# not depend on where the row sits in the batch.
_M32 = 0xFFFFFFFF
_PHILOX_KEY = (0x9E3779B9, 0xBB67AE85)
_PHILOX_ROUND = (0xD2511F53, 0xCD9E8D57)
DROPOUT_BITS = (8, 24)  # bits of a Philox word compared per element: 8 (16 elements a call, the default) or 24 (4)


def _mul_hi_lo_(k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 32-bit words of k * x for k < 2^32 and int64 x in [0, 2^32); x is overwritten by the low word.
    The int64 product wraps modulo 2^64 (two's complement, on every torch backend), so its bits are those of the
    unsigned product: one multiply instead of a 16-bit split (4x faster on CPU). The kernels' replay tests check
    the words bit for bit."""
    prod = x.mul_(k)
    return (prod >> 32).bitwise_and_(_M32), prod.bitwise_and_(_M32)


# An optional native implementation of the same streams for CPU tensors (bertforge.model registers the C++ one of
# bertforge.csrc): (k0, k1, c0, c1, c2, c3) -> (n, 4) int64 words, and the same with a threshold and dropout_bits ->
# (n, dropout_group(dropout_bits)) bool keep flags, over 1-D int64 numpy counters; and for whole rows of a mask
# (`_native_rows`): (k0, k1, c0, c1, c2, c3, width) per row -> the rows' keep flags (bool) or dropout multipliers
# (fp32), concatenated. The torch code below stays the oracle (compared bit for bit in the tests).
_NATIVE: tuple[Callable, ...] | None = None


def use_native_philox(words_fn: Callable | None, keep_fn: Callable | None = None,
                      keep_rows_fn: Callable | None = None, multiplier_rows_fn: Callable | None = None) -> None:
    """Register (or with None, remove) the native Philox for CPU tensors outside torch.compile."""
    global _NATIVE
    _NATIVE = None if words_fn is None else (words_fn, keep_fn, keep_rows_fn, multiplier_rows_fn)


def _native_fn(index: int, device) -> Callable | None:
    """Registered native function `index` of `use_native_philox` where it applies (CPU, outside torch.compile)."""
    fn = None if _NATIVE is None else _NATIVE[index]
    if fn is None or (device is not None and torch.device(device).type != "cpu") or torch.compiler.is_compiling():
        return None
    return fn


# The native multipliers live until backward (autograd keeps them for the product's gradient): one storage per
# use, kept across steps (kernels/host_buffers.py; ~80 MB a step at MiniLM's shape, B16, whose fresh pages would
# fault in every step), attention's blocks and the row sites' apart (their sizes differ).
_ATTENTION_MULTIPLIERS, _ROW_MULTIPLIERS = BufferPool(), BufferPool()


def _native_rows(seed, counters, width, p: float, dropout_bits: int, device, scale: float | None = None,
                 pool: BufferPool | None = None):
    """Rows r of a mask through the registered native row functions: counters (c0, c1, c2, c3) and width, each an
    int or an int64 tensor broadcast to (R,) -> (sum of widths,) bool keep flags, row r's element t from the Philox
    call with counter (c0[r] + t // g, c1[r], c2[r], c3[r]) (the `_keep_flags` rule), or with `scale` the fp32
    multipliers (scale where kept, 0 where dropped), on a storage of `pool` when given. None where the native
    functions do not apply (not registered, not CPU, inside torch.compile): the caller then takes the torch path."""
    fn = _native_fn(2 if scale is None else 3, device)
    if fn is None:
        return None
    key = int(seed.reshape(()).item()) if isinstance(seed, torch.Tensor) else int(seed)
    if not 0 <= key < 2**63:
        raise ValueError(f"philox seed must be a non-negative int64, got {key}")
    cs = torch.broadcast_tensors(*(torch.as_tensor(c, dtype=torch.int64, device="cpu") for c in (*counters, width)))
    flat = [c.reshape(-1).contiguous().numpy() for c in cs]
    args = (key & _M32, key >> 32, *flat, dropout_threshold(p, dropout_bits), dropout_bits)
    threads = torch.get_num_threads()
    if scale is None:
        return torch.from_numpy(fn(*args, threads=threads))
    out = None if pool is None else pool.take((int(flat[-1].sum()),), torch.float32)
    got = fn(*args, scale, threads=threads, out=None if out is None else out.numpy())
    return torch.from_numpy(got) if out is None else out


def _native_counters(seed, counters, device):
    """((k0, k1), broadcast flat numpy counters, shape) when the native Philox applies here, else None."""
    if _NATIVE is None or (device is not None and torch.device(device).type != "cpu") \
            or torch.compiler.is_compiling():
        return None
    key = int(seed.reshape(()).item()) if isinstance(seed, torch.Tensor) else int(seed)
    if not 0 <= key < 2**63:
        raise ValueError(f"philox seed must be a non-negative int64, got {key}")
    cs = torch.broadcast_tensors(*(torch.as_tensor(c, dtype=torch.int64, device="cpu") for c in counters))
    return (key & _M32, key >> 32), [c.reshape(-1).contiguous().numpy() for c in cs], cs[0].shape


def philox4x32(seed, c0, c1, c2, c3, rounds: int = 10) -> tuple[torch.Tensor, ...]:
    """Philox-4x32 with key (seed low word, seed high word) over counters c0..c3 (int64 tensors or ints in
    [0, 2^32), broadcast together) -> four int64 tensors of 32-bit words, as triton.language.philox computes them.
    seed: a non-negative int64, as an int or a (1,) int64 tensor (read where it lies: no host sync). On CPU tensors
    the registered native implementation computes the same words (`use_native_philox`)."""
    device = next((c.device for c in (c0, c1, c2, c3) if isinstance(c, torch.Tensor)), None)
    native = _native_counters(seed, (c0, c1, c2, c3), device) if rounds == 10 else None
    if native is not None:
        (k0, k1), flat, shape = native
        words = torch.from_numpy(_NATIVE[0](k0, k1, *flat))  # (n, 4)
        return tuple(words[:, w].reshape(shape) for w in range(4))
    return philox4x32_torch(seed, c0, c1, c2, c3, rounds)


def philox4x32_torch(seed, c0, c1, c2, c3, rounds: int = 10) -> tuple[torch.Tensor, ...]:
    """`philox4x32` in torch ops on any device (the oracle of the native and Triton streams)."""
    device = next((c.device for c in (c0, c1, c2, c3) if isinstance(c, torch.Tensor)), None)
    if isinstance(seed, torch.Tensor):
        key = seed.to(device=device, dtype=torch.int64).reshape(())
        k0, k1 = key & _M32, key >> 32
    else:
        if not 0 <= int(seed) < 2**63:
            raise ValueError(f"philox seed must be a non-negative int64, got {seed}")
        k0, k1 = int(seed) & _M32, int(seed) >> 32
    c0, c1, c2, c3 = (c.clone() for c in torch.broadcast_tensors(
        *(torch.as_tensor(c, dtype=torch.int64, device=device) for c in (c0, c1, c2, c3))))  # updated in place
    for _ in range(rounds):
        hi_b, lo_b = _mul_hi_lo_(_PHILOX_ROUND[1], c2)
        hi_a, lo_a = _mul_hi_lo_(_PHILOX_ROUND[0], c0)
        c0, c1, c2, c3 = hi_b.bitwise_xor_(c1).bitwise_xor_(k0), lo_b, hi_a.bitwise_xor_(c3).bitwise_xor_(k1), lo_a
        k0, k1 = (k0 + _PHILOX_KEY[0]) & _M32, (k1 + _PHILOX_KEY[1]) & _M32
    return c0, c1, c2, c3


def check_dropout_bits(dropout_bits: int) -> int:
    """dropout_bits itself when it is 8 or 24, else ValueError."""
    if dropout_bits not in DROPOUT_BITS or isinstance(dropout_bits, bool):
        raise ValueError(f"dropout_bits must be 8 or 24, got {dropout_bits!r}")
    return dropout_bits


def dropout_group(dropout_bits: int = 8) -> int:
    """Elements one Philox call decides: 16 at 8-bit thresholds, 4 at 24-bit ones."""
    return 16 if check_dropout_bits(dropout_bits) == 8 else 4


def dropout_threshold(p: float, dropout_bits: int = 8) -> int:
    """Integer threshold t = round(p * 2^dropout_bits) (nearest, ties to even) of the kernels' dropout: an element is
    dropped when its `dropout_bits` random bits, read as an unsigned integer, are below t. ValueError when p is
    outside [0, 1) or rounds to 2^dropout_bits (nothing would be kept)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    levels = 1 << check_dropout_bits(dropout_bits)
    t = int(round(p * levels))
    if t >= levels:
        raise ValueError(f"dropout probability {p} rounds to {t}/{levels} at {dropout_bits}-bit thresholds, which "
                         f"keeps nothing; use p < {(levels - 0.5) / levels} or dropout_bits=24")
    return t


def quantized_dropout_p(p: float, dropout_bits: int = 8) -> float:
    """The dropout probability the kernels apply for a requested p: dropout_threshold(p) / 2^dropout_bits
    (0.1 -> 26/256 = 0.1015625 at 8 bits, 1677722/2^24 at 24)."""
    return dropout_threshold(p, dropout_bits) / (1 << dropout_bits)


def dropout_scale(p: float, dropout_bits: int = 8) -> float:
    """Scale of the kept values, 1 / (1 - quantized_dropout_p(p)) = 2^bits / (2^bits - t): the expectation is exact."""
    levels = 1 << check_dropout_bits(dropout_bits)
    return levels / (levels - dropout_threshold(p, dropout_bits))


def _keep_flags(words, p: float, n: int, dropout_bits: int) -> torch.Tensor:
    """Keep flags of the four words (..., Q) of Q Philox calls each -> (..., n), n <= group * Q: at 8 bits element
    16c + 4w + k is byte k of word w of call c; at 24 bits element 4c + w is word w's top 24 bits."""
    thresh = dropout_threshold(p, dropout_bits)
    if dropout_bits == 8:
        keep = torch.stack([((w >> (8 * k)) & 0xFF) >= thresh for w in words for k in range(4)], dim=-1)
    else:
        keep = torch.stack([(w >> 8) >= thresh for w in words], dim=-1)  # (..., Q, 4)
    return keep.flatten(-2)[..., :n]


def _philox_keep(seed, c0, c1, c2, c3, p: float, n: int, device, dropout_bits: int) -> torch.Tensor:
    """`_keep_flags(philox4x32(seed, c0, c1, c2, c3), p, n, dropout_bits)`, natively on CPU when registered."""
    native = _native_counters(seed, (c0, c1, c2, c3), device)
    if native is None or _NATIVE[1] is None:
        return _keep_flags(philox4x32(seed, c0, c1, c2, c3), p, n, dropout_bits)
    (k0, k1), flat, shape = native
    keep = torch.from_numpy(_NATIVE[1](k0, k1, *flat, dropout_threshold(p, dropout_bits), dropout_bits))  # (n, group)
    return keep.reshape(*shape, keep.shape[-1]).flatten(-2)[..., :n]


def _row_words(row_ids, n: int, device):
    rows = torch.arange(n, device=device) if row_ids is None else row_ids.to(device=device, dtype=torch.int64)
    checkable = rows.device.type == "cpu" and not torch.compiler.is_compiling()  # no host sync on a device
    if rows.shape != (n,) or (checkable and bool((rows < 0).any())):
        raise ValueError(f"row_ids must be ({n},) non-negative int64")
    return rows & _M32, rows >> 32


def layer_norm_dropout_keep_ref(seed: int, n_rows: int, n_cols: int, p: float, row_ids=None, device="cpu",
                                dropout_bits: int = 8) -> torch.Tensor:
    """Keep mask (n_rows, n_cols) bool of kernels/layer_norm.py: with g = dropout_group(dropout_bits) (16 or 4),
    element (r, j) is element j % g of the Philox call with counter (j // g, 0, row_id[r] low, row_id[r] high)."""
    lo, hi = _row_words(row_ids, n_rows, device)
    native = _native_rows(seed, (0, 0, lo, hi), n_cols, p, dropout_bits, device)
    if native is not None:
        return native.view(n_rows, n_cols)
    group = dropout_group(dropout_bits)
    calls = torch.arange((n_cols + group - 1) // group, device=device)  # one Philox call per `group` columns
    return _philox_keep(seed, calls[None, :], 0, lo[:, None], hi[:, None], p, n_cols, device, dropout_bits)


def layer_norm_dropout_multiplier_ref(seed: int, n_rows: int, n_cols: int, p: float, row_ids=None, device="cpu",
                                      dropout_bits: int = 8) -> torch.Tensor:
    """The mask of `layer_norm_dropout_keep_ref` as fp32 multipliers (n_rows, n_cols): dropout_scale(p, dropout_bits)
    where kept, 0 where dropped (`keep_multiplier`); natively in one pass on CPU when registered."""
    lo, hi = _row_words(row_ids, n_rows, device)
    native = _native_rows(seed, (0, 0, lo, hi), n_cols, p, dropout_bits, device, dropout_scale(p, dropout_bits),
                          _ROW_MULTIPLIERS)
    if native is not None:
        return native.view(n_rows, n_cols)
    keep = layer_norm_dropout_keep_ref(seed, n_rows, n_cols, p, row_ids, device, dropout_bits)
    return keep_multiplier(keep, quantized_dropout_p(p, dropout_bits))


ATTN_DROPOUT_ROW_STRIDE = 16384  # Philox counters per query row (int32 counter arithmetic): max_seqlen <= 65536


def attention_dropout_keep_ref(seed: int, batch: int, nheads: int, seq: int, p: float, row_ids=None,
                               device="cpu", dropout_bits: int = 8) -> torch.Tensor:
    """Keep mask (B, nh, S, S) bool of kernels/attention.py, [b, h, i, j] = query i keeps key j: with
    g = dropout_group(dropout_bits) (16 or 4), element j % g of the Philox call with counter
    (i * 16384 + j // g, h, row_id[b] low, row_id[b] high), positions within each sequence (the same for the
    padded and the unpadded layout)."""
    lo, hi = _row_words(row_ids, batch, device)
    i = torch.arange(seq, device=device)
    h = torch.arange(nheads, device=device)
    native = _native_rows(seed, (i[None, None, :] * ATTN_DROPOUT_ROW_STRIDE, h[None, :, None], lo[:, None, None],
                                 hi[:, None, None]), seq, p, dropout_bits, device)
    if native is not None:
        return native.view(batch, nheads, seq, seq)
    group = dropout_group(dropout_bits)
    calls = torch.arange((seq + group - 1) // group, device=device)
    c0 = i[:, None] * ATTN_DROPOUT_ROW_STRIDE + calls[None, :]  # (S, Q): query i, keys group * c .. + group - 1
    return _philox_keep(seed, c0[None, None], h[None, :, None, None], lo[:, None, None, None],
                        hi[:, None, None, None], p, seq, device, dropout_bits)


def attention_varlen_dropout_multipliers(seed: int, lengths: list[int], nheads: int, p: float, row_ids=None,
                                         device="cpu", dropout_bits: int = 8, queries=None) -> list[torch.Tensor]:
    """Sequence i's block of the kernel's attention dropout mask as fp32 multipliers (nh, L_i, L_i) for each length
    L_i: `attention_dropout_keep_ref(seed, 1, nh, L_i, p, row_ids[i:i + 1])` (row id i when row_ids is None), kept
    -> dropout_scale(p, dropout_bits), dropped -> 0. queries: per sequence the (n_i,) int64 query positions whose
    rows are wanted -> blocks (nh, n_i, L_i) (rows of the full block). On CPU with the native Philox registered all
    blocks come from one call, as views of one buffer."""
    rows = torch.arange(len(lengths)) if row_ids is None else row_ids
    lo, hi = _row_words(rows, len(lengths), device)
    if queries is None:
        queries = [torch.arange(L) for L in lengths]
    counts = [int(qi.numel()) for qi in queries]
    if lengths and _native_fn(3, device) is not None:
        lo, hi = lo.cpu(), hi.cpu()
        c0, c1, c2, c3, width = [], [], [], [], []
        for i, (L, qi) in enumerate(zip(lengths, queries)):  # rows head-major: (h, query)
            n = counts[i] * nheads
            c0.append(qi.cpu().repeat(nheads) * ATTN_DROPOUT_ROW_STRIDE)
            c1.append(torch.arange(nheads).repeat_interleave(counts[i]))
            c2.append(lo[i].expand(n))
            c3.append(hi[i].expand(n))
            width.append(torch.full((n,), L, dtype=torch.int64))
        flat = _native_rows(seed, tuple(torch.cat(c) for c in (c0, c1, c2, c3)), torch.cat(width), p, dropout_bits,
                            device, dropout_scale(p, dropout_bits), _ATTENTION_MULTIPLIERS)
        sizes = [nheads * c * L for c, L in zip(counts, lengths)]
        return [b.view(nheads, c, L) for b, c, L in zip(flat.split(sizes), counts, lengths)]
    p_q = quantized_dropout_p(p, dropout_bits)
    return [keep_multiplier(attention_dropout_keep_ref(seed, 1, nheads, L, p, rows[i:i + 1], device=device,
                                                       dropout_bits=dropout_bits)[0][:, qi.to(device)], p_q)
            for i, (L, qi) in enumerate(zip(lengths, queries))]


# Per-sample streams: a caller that knows each sequence's identity (a (n_seq,) int64 "dropout id", e.g. a hash of
# (run seed, epoch, sample index)) keys every dropout site by (site seed, sequence id, position) instead of by where
# the sequence sits in the batch. Attention takes the sequence ids as its row ids (the counter holds the query and
# key positions); the row-wise sites (embeddings, the post-LN epilogues) take one row id per token, a Philox hash of
# (sequence id, position), and each site its own key (`dropout_site_seed`). Token row ids are 63-bit hashes: two
# tokens of a run share a site's mask only by a hash collision (~n^2 / 2^64 for n tokens).
_SITE_KEY = 0x6C8E9CF570932BD5  # Philox keys of the two hashes below (arbitrary constants)
_TOKEN_KEY = 0x2545F4914F6CDD1D


def _words_to_id(w_hi: torch.Tensor, w_lo: torch.Tensor) -> torch.Tensor:
    """Two 32-bit words -> a non-negative 63-bit int64."""
    return (w_hi << 31) | (w_lo >> 1)


def dropout_site_seed(site: int) -> int:
    """The Philox key (63-bit int) of dropout site number `site` (e.g. 0 = embeddings, then three per layer)."""
    if site < 0:
        raise ValueError(f"dropout site must be >= 0, got {site}")
    w = philox4x32(_SITE_KEY, site & _M32, site >> 32, 0, 0)
    return int(_words_to_id(w[0], w[1]))


def token_row_ids(sequence_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Row ids (n,) int64 in [0, 2^63) of tokens: a Philox hash of (position, sequence id). sequence_ids, positions:
    (n,) int64, the id of each token's sequence and its position in it (both non-negative; positions < 2^32)."""
    ids = sequence_ids.to(torch.int64)
    w = philox4x32(_TOKEN_KEY, positions.to(torch.int64), 0, ids & _M32, ids >> 32)
    return _words_to_id(w[0], w[1])


def dropout_ref(x: torch.Tensor, p: float, seed=None, row_ids=None, dropout_bits: int = 8) -> torch.Tensor:
    """dropout(x) with the kernels' rule over the rows of the (n_rows, h) view: element (r, j) kept as in
    `layer_norm_dropout_keep_ref(seed, n_rows, h, p, row_ids, dropout_bits=dropout_bits)`, kept values times
    dropout_scale(p, dropout_bits). Without a seed torch draws the mask (F.dropout at the quantised p)."""
    if p == 0.0:
        return x
    if seed is None:
        return F.dropout(x, p=quantized_dropout_p(p, dropout_bits))
    return (x * _row_multiplier(seed, x, p, row_ids, dropout_bits)).to(x.dtype)


def _row_multiplier(seed, x: torch.Tensor, p: float, row_ids, dropout_bits: int) -> torch.Tensor:
    """The multiplier (x's shape, at least fp32 and x's dtype) of the row dropout mask of x's (n_rows, h) view."""
    h = x.shape[-1]
    if torch.promote_types(x.dtype, torch.float32) == torch.float32:
        return layer_norm_dropout_multiplier_ref(seed, x.numel() // h, h, p, row_ids, device=x.device,
                                                 dropout_bits=dropout_bits).view(x.shape)
    keep = layer_norm_dropout_keep_ref(seed, x.numel() // h, h, p, row_ids, device=x.device,
                                       dropout_bits=dropout_bits).view(x.shape)
    return keep_multiplier(keep, quantized_dropout_p(p, dropout_bits), x.dtype)


# ---- FFN epilogue: bias + GELU -----------------------------------------------------------------------------------
def bias_gelu_ref(x: torch.Tensor, bias: torch.Tensor, approximate: str = "none", upcast: bool = False):
    """gelu(x + bias); x (..., n), bias (n,). approximate 'none' is BERT's exact erf GELU, 'tanh' the approximation.
    upcast computes in fp64."""
    if upcast:
        return F.gelu(x.double() + bias.double(), approximate=approximate)
    return F.gelu(x + bias, approximate=approximate)


# ---- post-LN epilogue: bias + dropout + residual add + LayerNorm -------------------------------------------------
def bias_dropout_add_layernorm_ref(x, bias, residual, weight, ln_bias, eps, dropout_p=0.0, keep_mask=None,
                                   upcast=False, seed=None, row_ids=None, dropout_bits=8):
    """LayerNorm(residual + dropout(x + bias)); x, residual (..., h); bias (h,) or None (already added), weight,
    ln_bias (h,). keep_mask (bool, x's shape) replays a given dropout mask (the kernel's:
    `layer_norm_dropout_keep_ref`); a Philox `seed` (int or (1,) int64 tensor) with optional `row_ids` (n_rows,)
    draws the kernel's mask for them; with neither, torch draws its own. The probability applied is
    quantized_dropout_p(dropout_p, dropout_bits). upcast computes in fp64."""
    multiplier = None
    if keep_mask is None and seed is not None and dropout_p > 0:
        if upcast:
            h = x.shape[-1]
            keep_mask = layer_norm_dropout_keep_ref(seed, x.numel() // h, h, dropout_p, row_ids, device=x.device,
                                                    dropout_bits=dropout_bits).view(x.shape)
        else:
            multiplier = _row_multiplier(seed, x, dropout_p, row_ids, dropout_bits)
    if upcast:
        x, bias, residual, weight, ln_bias = (t.double() if t is not None else None
                                              for t in (x, bias, residual, weight, ln_bias))
    z = x + bias if bias is not None else x
    p_q = quantized_dropout_p(dropout_p, dropout_bits) if dropout_p > 0 else 0.0
    if multiplier is not None:
        z = (z * multiplier).to(z.dtype)
    elif keep_mask is not None:
        if upcast:
            z = torch.where(keep_mask, z / (1.0 - p_q), torch.zeros((), dtype=z.dtype, device=z.device))
        else:
            z = (z * keep_multiplier(keep_mask, p_q, z.dtype)).to(z.dtype)
    else:
        z = F.dropout(z, p=p_q, training=p_q > 0)
    y = z + residual
    return F.layer_norm(y, (y.shape[-1],), weight, ln_bias, eps)


# ---- sparse MLM loss ---------------------------------------------------------------------------------------------
def masked_lm_loss_ref(hidden, decoder_weight, decoder_bias, labels):
    """Cross-entropy of full logits = hidden @ decoder_weight.T + decoder_bias. hidden (n, h); decoder_weight (V, h);
    decoder_bias (V,); labels (n,) int64, -100 = ignored. Returns (mean loss over labelled rows, argmax ids (n,)).
    Logits are upcast to at least fp32 (pass fp64 inputs for an exact reference)."""
    logits = F.linear(hidden, decoder_weight, decoder_bias)  # (n, V)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
    return loss, logits.detach().argmax(-1)


# ---- MLM masking -------------------------------------------------------------------------------------------------
def mlm_mask_ref(input_ids, special_tokens_mask, *, mlm_probability=0.15, mask_token_id, vocab_size,
                 unigram_cdf=None, seed=0, offset=0, mask_replace_prob=0.8, random_replace_prob=0.1, uniforms=None):
    """BERT's 80/10/10 masking of independently chosen positions (each non-special token with mlm_probability).
    input_ids, special_tokens_mask: same shape, any layout. Returns (masked ids, labels with -100 where not chosen,
    flat indices of the chosen positions ascending). uniforms (>= 3, numel) fp32: the per-position u0, u1, u2
    (`bertforge.kernels.masking.philox_uniforms(seed, offset, n)` makes the output bit-identical to the kernel); None draws
    them with torch.rand from a CPU generator seeded with `seed` (same rule and rates, a different stream)."""
    shape = input_ids.shape
    ids = input_ids.reshape(-1)
    n = ids.numel()
    if uniforms is None:
        g = torch.Generator(device="cpu").manual_seed(seed)
        uniforms = torch.rand(3, offset + n, generator=g)[:, offset:].to(ids.device)
    u0, u1, u2 = uniforms[0], uniforms[1], uniforms[2]
    f32 = lambda v: torch.tensor(v, dtype=torch.float32, device=ids.device)  # noqa: E731  thresholds as the kernel
    chosen = (u0 < f32(mlm_probability)) & ~special_tokens_mask.reshape(-1).bool()
    use_mask = chosen & (u1 < f32(mask_replace_prob))
    use_random = chosen & (u1 >= f32(mask_replace_prob)) & (u1 < f32(mask_replace_prob + random_replace_prob))
    if unigram_cdf is not None:
        token = torch.searchsorted(unigram_cdf, u2, right=True)
    else:
        token = (u2 * f32(vocab_size)).to(torch.int64)
    token = token.clamp_max(vocab_size - 1).to(ids.dtype)
    out = torch.where(use_mask, torch.full_like(ids, mask_token_id), ids)
    out = torch.where(use_random, token, out)
    labels = torch.where(chosen, ids.long(), torch.full_like(ids, IGNORE_INDEX, dtype=torch.int64))
    return out.view(shape), labels.view(shape), chosen.nonzero().flatten()


def unigram_cdf_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """float32 cumulative distribution (V,) from token counts (V,) (zero counts: never drawn); last entry 1."""
    cdf = torch.cumsum(counts.double(), 0)
    return (cdf / cdf[-1]).float()


# ---- LAMB --------------------------------------------------------------------------------------------------------
def lamb_bias_corrections(beta1: float, beta2: float, step: int, bias_correction: bool) -> tuple[float, float]:
    """(1 - beta1^step, 1 - beta2^step), or (1, 1) without bias correction."""
    if bias_correction:
        return 1.0 - beta1 ** step, 1.0 - beta2 ** step
    return 1.0, 1.0


def lamb_step_ref(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
                  exp_avg_sqs: list[torch.Tensor], *, lr: float, beta1: float, beta2: float, eps: float,
                  weight_decay: float, step: int, bias_correction: bool = True,
                  max_trust_ratio: float | None = 10.0) -> None:
    """One LAMB step (You et al. 2019, Algorithm 2; see kernels/lamb.py) over lists of tensors, foreach torch, in
    place on params, exp_avgs and exp_avg_sqs; `step` counts from 1. Math in each parameter's dtype with grads cast
    to it."""
    if not params:
        return
    grads = [g.to(p.dtype) for g, p in zip(grads, params)]
    bc1, bc2 = lamb_bias_corrections(beta1, beta2, step, bias_correction)
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)  # m = beta1 m + (1 - beta1) g
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
    denom = torch._foreach_div(exp_avg_sqs, bc2)
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, eps)  # sqrt(v_hat) + eps
    update = torch._foreach_div(exp_avgs, bc1)
    torch._foreach_div_(update, denom)  # r
    if weight_decay != 0.0:
        torch._foreach_add_(update, params, alpha=weight_decay)  # u = r + wd x
    w_norms = torch.stack(torch._foreach_norm(params))
    u_norms = torch.stack(torch._foreach_norm(update))
    ratio = torch.where((w_norms > 0) & (u_norms > 0), w_norms / u_norms, torch.ones_like(w_norms))
    if max_trust_ratio is not None:
        ratio = ratio.clamp_max(max_trust_ratio)
    scales = (-lr * ratio).unbind(0)
    torch._foreach_mul_(update, scales)
    torch._foreach_add_(params, update)
