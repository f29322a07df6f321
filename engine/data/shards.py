"""The token files of a sharded dataset as one global token space: mapped once with their file descriptors closed
(C++ `MappedShards`, csrc/shards.cpp), so a dataset of any number of shards holds no open file, and a gather across
shards that is one vectorised pass whatever the shard count.

`ShardTokens` is the typed facade; `gather_ref` is the numpy reference (per-shard `np.memmap` and a loop over the
shards a batch touches — the loader's former path) that the tests compare against."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from bertforge import _csrc
from bertforge.errors import DataError

TOKEN_DTYPES = (np.dtype(np.uint16), np.dtype(np.int32))


class ShardTokens:
    """Token files `paths` (n_tokens[s] ids of `dtype` each, uint16 or int32) mapped read-only, in order.

    Global token t of shard s sits at t - bases[s]; bases (n_shards + 1,) int64. Raises DataError naming the file
    when one is missing, unreadable, or not n_tokens[s] * itemsize bytes long."""

    def __init__(self, paths: Sequence[str | Path], n_tokens: Sequence[int], dtype: np.dtype):
        self.dtype = np.dtype(dtype)
        if self.dtype not in TOKEN_DTYPES:
            raise ValueError(f"token dtype must be uint16 or int32, not {self.dtype}")
        try:
            self._mapped = _csrc.MappedShards([str(p) for p in paths], [int(n) for n in n_tokens],
                                              self.dtype.itemsize)
        except RuntimeError as exc:  # "<path>: <what>" from csrc/shards.cpp
            path, _, what = str(exc).partition(": ")
            raise DataError(what or str(exc), path) from None
        self.bases = self._mapped.bases()

    @property
    def n_shards(self) -> int:
        return int(self._mapped.n_shards)

    @property
    def n_tokens(self) -> int:
        return int(self.bases[-1])

    def gather(self, positions: np.ndarray) -> np.ndarray:
        """Token ids at global `positions` (int64, any shape) -> int64 array of the same shape. IndexError when a
        position lies outside [0, n_tokens)."""
        return self._mapped.gather(np.asarray(positions, dtype=np.int64))

    def view(self, shard: int) -> np.ndarray:
        """Shard `shard`'s tokens (n,) as a read-only array over the mapping (no copy)."""
        return self._mapped.view(int(shard))

    def tokens(self, start: int, end: int) -> np.ndarray:
        """Global token range [start, end) that lies in one shard (documents never cross shards), no copy."""
        s = int(np.searchsorted(self.bases, start, side="right")) - 1
        if not (0 <= s < self.n_shards and self.bases[s] <= start <= end <= self.bases[s + 1]):
            raise IndexError(f"token range [{start}, {end}) is not inside one shard")
        return self.view(s)[start - self.bases[s]:end - self.bases[s]]


def gather_ref(paths: Sequence[str | Path], n_tokens: Sequence[int], dtype: np.dtype,
               positions: np.ndarray) -> np.ndarray:
    """numpy reference of `ShardTokens.gather`: each shard an `np.memmap`, a loop over the shards touched."""
    dtype = np.dtype(dtype)
    positions = np.asarray(positions, dtype=np.int64)
    bases = np.concatenate([[0], np.cumsum(np.asarray(n_tokens, dtype=np.int64))])
    if positions.size and (positions.min() < 0 or positions.max() >= bases[-1]):
        raise IndexError("position outside the dataset")
    out = np.empty(positions.shape, dtype=np.int64)
    shard = np.searchsorted(bases, positions, side="right") - 1
    for s in np.unique(shard):
        sel = shard == s
        tokens = np.memmap(paths[s], dtype=dtype, mode="r", shape=(int(n_tokens[s]),))
        out[sel] = tokens[positions[sel] - bases[s]]
        del tokens
    return out
