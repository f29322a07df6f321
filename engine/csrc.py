"""Typed facade over the C++ extension `engine._csrc`, with the numpy references the tests compare against."""
from __future__ import annotations

import numpy as np

try:
    from engine import _csrc
except ImportError as exc:  # pragma: no cover - only when the package was not built
    raise ImportError(
        "bertforge's C++ extension engine._csrc is not built; install the package with `pip install -e .` "
        f"(needs g++ and pybind11): {exc}"
    ) from exc


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
