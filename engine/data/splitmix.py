"""SplitMix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014): the one
counter-based generator behind every data-side random choice — NSP pairing (the C++ sample map, csrc/sample_map.cpp,
and its Python reference), host MLM masking (vectorised over (sample, position) counters) and the seeds of device
masking. A choice depends only on (seed, epoch, sample, position), never on the rank count, the batch it lands in
or a resume.

- `mix64(z)` / `mix64_array(z)`: the finaliser on a Python int / a numpy uint64 array (wrapping arithmetic).
- `SplitMix64(seed, stream)`: the sequential generator, bit for bit the C++ builder's.
- `derive_seed(*parts)`: one 62-bit seed from several integers (e.g. run seed, epoch, micro-batch index);
  `derive_seeds(*parts)` the same element-wise over arrays (e.g. per-sample dropout ids).
"""
from __future__ import annotations

import numpy as np

GOLDEN = 0x9E3779B97F4A7C15  # SplitMix64's increment (2^64 / golden ratio)
M64 = (1 << 64) - 1
_C1, _C2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_GOLDEN_U64, _C1_U64, _C2_U64 = np.uint64(GOLDEN), np.uint64(_C1), np.uint64(_C2)


def mix64(z: int) -> int:
    """SplitMix64's finaliser on a Python int (taken modulo 2^64)."""
    z &= M64
    z = ((z ^ (z >> 30)) * _C1) & M64
    z = ((z ^ (z >> 27)) * _C2) & M64
    return z ^ (z >> 31)


def mix64_array(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a uint64 array (wrapping arithmetic), same values as `mix64` element-wise."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _C1_U64
        z = (z ^ (z >> np.uint64(27))) * _C2_U64
        return z ^ (z >> np.uint64(31))


class SplitMix64:
    """The sequential generator of stream `stream` under `seed`: state = mix(mix(seed) ^ stream), then each draw adds
    GOLDEN and returns mix(state). Bit for bit the C++ sample-map builder's generator."""

    def __init__(self, seed: int, stream: int):
        self.state = mix64(mix64(seed & M64) ^ (stream & M64))

    def next(self) -> int:
        """The next 64-bit output."""
        self.state = (self.state + GOLDEN) & M64
        return mix64(self.state)

    def uniform(self) -> float:
        """A float in [0, 1) from the top 53 bits."""
        return (self.next() >> 11) * 2.0 ** -53

    def randint(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi] (inclusive; modulo draw, as the C++ builder)."""
        return lo + self.next() % (hi - lo + 1)


def derive_seed(*parts: int) -> int:
    """A 62-bit seed from integers: z = mix((z ^ part) + GOLDEN) over the parts in turn, shifted right by 2 (fits
    a signed int64 and Triton's seed argument)."""
    z = 0
    for part in parts:
        z = mix64(((z ^ (part & M64)) + GOLDEN) & M64)
    return z >> 2


def derive_seeds(*parts) -> np.ndarray:
    """`derive_seed` element-wise: parts are ints or int arrays (non-negative), broadcast together -> int64 array of
    62-bit seeds."""
    z = np.uint64(0)
    with np.errstate(over="ignore"):
        for part in parts:
            p = np.asarray(part).astype(np.uint64) if not isinstance(part, int) else np.uint64(part & M64)
            z = mix64_array((z ^ p) + _GOLDEN_U64)
    return np.asarray(z >> np.uint64(2)).astype(np.int64)


def counter_key(seed: int, epoch: int) -> int:
    """The per-(seed, epoch) key added to the counters of `counter_bits`."""
    return mix64(mix64(seed & M64) ^ (epoch & M64))


def counter_bits(seed: int, epoch: int, counters: np.ndarray) -> np.ndarray:
    """uint64 random bits for each uint64 counter: mix(counter * GOLDEN + key(seed, epoch))."""
    with np.errstate(over="ignore"):
        return mix64_array(np.asarray(counters, dtype=np.uint64) * _GOLDEN_U64 + np.uint64(counter_key(seed, epoch)))


def mask_seed(seed: int, epoch: int, global_index: int) -> int:
    """Device masking's seed of global micro batch `global_index` of `epoch` (62 bits, SplitMix64)."""
    return derive_seed(seed, epoch, global_index)


DROPOUT_STREAM = 0xD50  # tags the dropout ids' derivation apart from the other seeds of the same parts


def sample_dropout_ids(seed: int, epochs, indices) -> np.ndarray:
    """(B,) int64 dropout identities in [0, 2^62) of samples `indices` (B,) seen in `epochs` (B,) (or one epoch):
    the model keys every dropout mask by them, so a sample's masks depend on (run seed, epoch, sample) only."""
    return derive_seeds(seed, DROPOUT_STREAM, epochs, np.asarray(indices, dtype=np.int64))
