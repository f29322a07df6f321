"""Typed facade over the C++ extension `bertforge._csrc`, with the numpy references the tests compare against."""
from __future__ import annotations

import numpy as np

try:
    from bertforge import _csrc
except ImportError as exc:  # pragma: no cover - only when the package was not built
    raise ImportError(
        "bertforge's C++ extension bertforge._csrc is not built; install the package with `pip install -e .` "
        f"(needs g++ and pybind11): {exc}"
    ) from exc


def _word(fn: str, name: str, value) -> int:
    """value as a 32-bit unsigned word, else one ValueError line."""
    v = int(value)
    if not 0 <= v < 2**32:
        raise ValueError(f"{fn}: {name} must be a 32-bit word in [0, 2^32), got {v}")
    return v


def _ints(fn: str, names: str, *arrays):
    """The arrays as they are when each holds integers (int64 or any other integer dtype), else one ValueError line:
    the C++ side would otherwise truncate floats silently."""
    out = tuple(np.asarray(a) for a in arrays)
    for a in out:
        if a.dtype.kind not in "iu":
            raise ValueError(f"{fn}: {names} must be integer arrays, got dtype {a.dtype}")
    return out


def _threads(threads) -> int:
    """The thread cap as the C++ int: at least 1, at most 2^31 - 1 (rows and elements cap it further)."""
    return min(max(int(threads), 1), 2**31 - 1)


def unpad_offsets(lengths: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray, int]:
    """lengths (B,) -> cu_seqlens (B+1,) int32, indices (total,) int64 into a flattened (B, seq_len) grid,
    max_seqlen."""
    return _csrc.unpad_offsets(np.asarray(lengths, dtype=np.int64), int(seq_len))


def unpad_offsets_ref(lengths: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray, int]:
    """numpy reference for `unpad_offsets`."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim != 1:
        raise ValueError("lengths must be 1-D")
    if ((lengths < 0) | (lengths > seq_len)).any():
        raise ValueError(f"lengths must lie in [0, {seq_len}]")
    cu_seqlens = np.zeros(len(lengths) + 1, dtype=np.int32)
    cu_seqlens[1:] = np.cumsum(lengths)
    grid = np.arange(seq_len)[None, :] < lengths[:, None]  # (B, seq_len)
    indices = np.flatnonzero(grid).astype(np.int64)
    return cu_seqlens, indices, int(lengths.max(initial=0))


def philox_words(k0: int, k1: int, c0: np.ndarray, c1: np.ndarray, c2: np.ndarray, c3: np.ndarray) -> np.ndarray:
    """Philox-4x32-10 (the Triton kernels' dropout stream): key (k0, k1) 32-bit words, counters (n,) int64 each in
    [0, 2^32) -> (n, 4) int64 words. Reference: kernels/reference.py philox4x32_torch."""
    fn = "philox_words"
    return _csrc.philox_words(_word(fn, "k0", k0), _word(fn, "k1", k1), *_ints(fn, "counters", c0, c1, c2, c3))


def philox_keep(k0: int, k1: int, c0: np.ndarray, c1: np.ndarray, c2: np.ndarray, c3: np.ndarray,
                threshold: int, dropout_bits: int = 8) -> np.ndarray:
    """Dropout keep flags of `philox_words` (kernels/reference.py's rule): dropout_bits 8 -> (n, 16) bool, flag
    4w + k = byte k of word w >= threshold; 24 -> (n, 4) bool, (word w >> 8) >= threshold. ValueError for other bits
    or a threshold >= 2^dropout_bits."""
    fn = "philox_keep"
    return _csrc.philox_keep(_word(fn, "k0", k0), _word(fn, "k1", k1), *_ints(fn, "counters", c0, c1, c2, c3),
                             _word(fn, "threshold", threshold), int(dropout_bits))


def philox_keep_rows(k0: int, k1: int, c0: np.ndarray, c1: np.ndarray, c2: np.ndarray, c3: np.ndarray,
                     width: np.ndarray, threshold: int, dropout_bits: int, threads: int = 1,
                     out: np.ndarray | None = None) -> np.ndarray:
    """Dropout keep flags of whole rows, many Philox calls at once (vectorised; `threads` threads over the rows):
    rows r (c0, c1, c2, c3, width each (R,) int64) -> (sum(width),) bool, the rows one after another; row r's
    element t is element t % g of the call with counter (c0[r] + t // g, c1[r], c2[r], c3[r]) under `philox_keep`'s
    rule (g = 16 at dropout_bits 8, 4 at 24); written into `out` (a contiguous (sum(width),) array of the result's
    dtype) when given. Reference: kernels/reference.py `philox4x32_torch` + `_keep_flags`. ValueError for arrays of
    unequal length, negative widths, dropout_bits not 8 or 24, threshold >= 2^bits, an `out` that does not fit."""
    fn = "philox_keep_rows"
    return _csrc.philox_keep_rows(_word(fn, "k0", k0), _word(fn, "k1", k1),
                                  *_ints(fn, "counters and width", c0, c1, c2, c3, width),
                                  _word(fn, "threshold", threshold), int(dropout_bits), _threads(threads), out)


def philox_multiplier_rows(k0: int, k1: int, c0: np.ndarray, c1: np.ndarray, c2: np.ndarray, c3: np.ndarray,
                           width: np.ndarray, threshold: int, dropout_bits: int, scale: float,
                           threads: int = 1, out: np.ndarray | None = None) -> np.ndarray:
    """`philox_keep_rows` as fp32 dropout multipliers (sum(width),): `scale` (float32) where kept, 0 where dropped."""
    fn = "philox_multiplier_rows"
    return _csrc.philox_multiplier_rows(_word(fn, "k0", k0), _word(fn, "k1", k1),
                                        *_ints(fn, "counters and width", c0, c1, c2, c3, width),
                                        _word(fn, "threshold", threshold), int(dropout_bits), float(scale),
                                        _threads(threads), out)

