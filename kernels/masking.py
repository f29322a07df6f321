"""MLM masking on the GPU (BERT's recipe): choose mlm_probability of the non-special positions; of those,
mask_replace_prob become [MASK], random_replace_prob a random token (from the corpus unigram distribution, or uniform
over the vocabulary) and the rest keep their token. Emits masked ids, labels (-100 where not chosen) and the sorted
flat indices of the chosen positions.

Randomness: position i (flat) draws four Philox uniforms tl.rand4x(seed, offset + i) -> (u0, u1, u2, u3):
  chosen  = u0 < mlm_probability and not special
  action  = [MASK] if u1 < mask_replace_prob, random token if u1 < mask_replace_prob + random_replace_prob, else keep
  token   = first i with unigram_cdf[i] > u2 (torch.searchsorted(cdf, u2, right=True)), or floor(u2 * vocab_size)
(u3 unused.) Counters are int32 (identical on triton 3.6 and 3.9): offset + numel must stay below 2**31, so give each
batch its own seed and use `offset` only to split one batch's stream across calls. `philox_uniforms` materialises the
same numbers so `bertforge.kernels.reference.mlm_mask_ref` (pure torch) reproduces the kernel bit for bit.

Two launches: `_mlm_mask_kernel` is the single pass over the tokens (reads ids and the 1-byte special mask, writes
masked ids, labels and a count per block); after an exclusive scan of the block counts (and one host sync, needed
anyway to size the output), `_mlm_positions_kernel` re-reads only the special mask, regenerates u0 and scatters the
chosen indices in order.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from bertforge.kernels._common import is_interpreting
from bertforge.kernels.reference import IGNORE_INDEX


@triton.jit
def _choose(SPECIAL_ptr, offs, in_range, seed, offset, mlm_probability):
    """(chosen, u1, u2) for the flat positions `offs` (int32)."""
    u0, u1, u2, _ = tl.rand4x(seed, offset + offs)
    special = tl.load(SPECIAL_ptr + offs, mask=in_range, other=1)
    return in_range & (special == 0) & (u0 < mlm_probability), u1, u2


@triton.jit
def _mlm_mask_kernel(
    IDS_ptr,  # (n,) token ids, any int dtype
    SPECIAL_ptr,  # (n,) uint8, 1 = special token (never chosen)
    CDF_ptr,  # (vocab_size,) fp32 cumulative unigram distribution (unused when not UNIGRAM)
    OUT_ptr,  # (n,) masked ids, ids' dtype
    LABELS_ptr,  # (n,) int64 original id at chosen positions, IGNORE elsewhere
    COUNTS_ptr,  # (n_blocks,) int32 chosen positions per block
    n,
    seed,
    offset,  # int32 counter offset
    mlm_probability,
    mask_replace_prob,
    keep_threshold,  # mask_replace_prob + random_replace_prob (fp32)
    mask_token_id,
    vocab_size,
    IGNORE: tl.constexpr,
    UNIGRAM: tl.constexpr,
    SEARCH_STEPS: tl.constexpr,  # vocab_size.bit_length(): binary-search steps over the cdf
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    in_range = offs < n
    ids = tl.load(IDS_ptr + offs, mask=in_range, other=0)
    chosen, u1, u2 = _choose(SPECIAL_ptr, offs, in_range, seed, offset, mlm_probability)
    use_mask = chosen & (u1 < mask_replace_prob)
    use_random = chosen & (u1 >= mask_replace_prob) & (u1 < keep_threshold)
    if UNIGRAM:
        # first index with cdf > u2, as torch.searchsorted(cdf, u2, right=True); only random lanes touch memory
        lo = tl.zeros((BLOCK,), dtype=tl.int32)
        hi = tl.zeros((BLOCK,), dtype=tl.int32) + vocab_size
        for _ in tl.static_range(SEARCH_STEPS):
            active = lo < hi
            mid = (lo + hi) // 2
            c = tl.load(CDF_ptr + mid, mask=active & use_random, other=0.0)
            left = c > u2
            hi = tl.where(active & left, mid, hi)
            lo = tl.where(active & (~left), mid + 1, lo)
        token = lo
    else:
        token = (u2 * vocab_size).to(tl.int32)  # fp32 product, truncated: floor for u2 >= 0
    token = tl.minimum(token, vocab_size - 1)
    out = tl.where(use_mask, mask_token_id, ids)
    out = tl.where(use_random, token.to(ids.dtype), out)
    tl.store(OUT_ptr + offs, out.to(OUT_ptr.dtype.element_ty), mask=in_range)
    tl.store(LABELS_ptr + offs, tl.where(chosen, ids.to(tl.int64), IGNORE), mask=in_range)
    tl.store(COUNTS_ptr + pid, tl.sum(chosen.to(tl.int32), axis=0))


@triton.jit
def _mlm_positions_kernel(
    SPECIAL_ptr,  # (n,) uint8
    STARTS_ptr,  # (n_blocks,) int64 exclusive scan of the block counts
    POS_ptr,  # (n_chosen,) int64 output: flat indices of chosen positions, ascending
    n,
    seed,
    offset,
    mlm_probability,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    chosen, _, _ = _choose(SPECIAL_ptr, offs, offs < n, seed, offset, mlm_probability)
    c = chosen.to(tl.int32)
    rank = tl.cumsum(c, axis=0) - c  # exclusive rank inside the block
    dst = tl.load(STARTS_ptr + pid) + rank.to(tl.int64)
    tl.store(POS_ptr + dst, offs.to(tl.int64), mask=chosen)


@triton.jit
def _philox_uniforms_kernel(
    U_ptr,  # (4, n) fp32 output: the kernel's u0..u3 for each flat position
    n,
    seed,
    offset,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    u0, u1, u2, u3 = tl.rand4x(seed, offset + offs)
    tl.store(U_ptr + offs, u0, mask=m)
    tl.store(U_ptr + n + offs, u1, mask=m)
    tl.store(U_ptr + 2 * n + offs, u2, mask=m)
    tl.store(U_ptr + 3 * n + offs, u3, mask=m)


def _block() -> int:
    return 8192 if is_interpreting() else 2048


def _check_counter(seed: int, offset: int, n: int) -> None:
    if not 0 <= offset or offset + n >= 2**31:
        raise ValueError(f"mlm_mask: need 0 <= offset and offset + numel < 2**31 (got {offset} + {n}); use a fresh "
                         "seed per batch")
    if not 0 <= seed < 2**63:
        raise ValueError(f"mlm_mask: seed must be a non-negative int64, got {seed}")


def philox_uniforms(seed: int, offset: int, n: int, device="cpu") -> torch.Tensor:
    """(4, n) fp32: the uniforms u0..u3 the masking kernel draws at flat positions 0..n-1."""
    _check_counter(seed, offset, n)
    u = torch.empty(4, n, dtype=torch.float32, device=device)
    if n:
        _philox_uniforms_kernel[(triton.cdiv(n, _block()),)](u, n, seed, offset, BLOCK=_block())
    return u


def mlm_mask_forward(input_ids, special_tokens_mask, mlm_probability, mask_token_id, vocab_size, unigram_cdf, seed,
                     offset, mask_replace_prob, random_replace_prob):
    shape = input_ids.shape
    ids = input_ids.reshape(-1).contiguous()
    special = special_tokens_mask.reshape(-1).contiguous().to(torch.uint8)
    n = ids.numel()
    _check_counter(seed, offset, n)
    if special.numel() != n:
        raise ValueError(f"mlm_mask: special_tokens_mask {tuple(special_tokens_mask.shape)} != ids {tuple(shape)}")
    if unigram_cdf is not None:
        if unigram_cdf.shape != (vocab_size,) or unigram_cdf.dtype != torch.float32:
            raise ValueError(f"mlm_mask: unigram_cdf must be float32 ({vocab_size},)")
        cdf = unigram_cdf.contiguous()
    else:
        cdf = torch.empty(1, dtype=torch.float32, device=ids.device)
    out = torch.empty_like(ids)
    labels = torch.empty(n, dtype=torch.int64, device=ids.device)
    block = _block()
    n_blocks = triton.cdiv(n, block)
    counts = torch.empty(n_blocks, dtype=torch.int32, device=ids.device)
    keep_threshold = mask_replace_prob + random_replace_prob  # rounded to fp32 as a kernel argument
    if n:
        _mlm_mask_kernel[(n_blocks,)](ids, special, cdf, out, labels, counts, n, seed, offset, mlm_probability,
                                      mask_replace_prob, keep_threshold, mask_token_id, vocab_size, IGNORE=IGNORE_INDEX,
                                      UNIGRAM=unigram_cdf is not None, SEARCH_STEPS=max(1, vocab_size.bit_length()),
                                      BLOCK=block, num_warps=8)
    ends = torch.cumsum(counts, 0, dtype=torch.int64)
    total = int(ends[-1].item()) if n else 0  # the one host sync: sizes the positions
    positions = torch.empty(total, dtype=torch.int64, device=ids.device)
    if total:
        _mlm_positions_kernel[(n_blocks,)](special, ends - counts, positions, n, seed, offset, mlm_probability,
                                           BLOCK=block, num_warps=8)
    return out.view(shape), labels.view(shape), positions


def mlm_mask(input_ids: torch.Tensor, special_tokens_mask: torch.Tensor, *, mlm_probability: float = 0.15,
             mask_token_id: int, vocab_size: int, unigram_cdf: torch.Tensor | None = None, seed: int,
             offset: int = 0, mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1):
    """input_ids (B, S) or (total,) int; special_tokens_mask bool, same shape (True: [CLS], [SEP], [PAD], ...: never
    chosen). unigram_cdf: float32 (vocab_size,) cumulative distribution for random replacements (None: uniform over
    [0, vocab_size)). Returns (masked_ids like input_ids, labels int64 same shape with -100 where not chosen,
    masked_positions (n_chosen,) int64 flat indices, ascending). Deterministic for a given (seed, offset)."""
    return mlm_mask_forward(input_ids, special_tokens_mask, mlm_probability, mask_token_id, vocab_size, unigram_cdf,
                            seed, offset, mask_replace_prob, random_replace_prob)

