"""The even distributed order of micro batches, shared by every training loop.

Each epoch is a seeded permutation of the N samples; global micro batch k is samples [k*B, (k+1)*B) of that order
(a micro batch that runs past the end wraps into the next epoch's permutation), and rank r serves global micro
batches k = position * world + r. Hence:
- every rank takes exactly one micro batch per round: none runs out first, so no rank waits in a collective at the
  end of an epoch, whatever N, B and the rank count;
- a global batch (one round of micro batches times the accumulation) holds the same samples whatever the rank
  count, so 2 ranks x accumulation n equal 1 rank x accumulation 2n, loss for loss;
- a rank's place in the stream is one integer (its position), so resume is exact and batches can be built ahead
  (`indices(position)` is a pure function); on another number of ranks the position is remapped through the count
  of samples consumed (`remap_position`), which is the same on every rank at a step boundary.
The permutation of epoch e is numpy's default_rng([seed, e, 7]).permutation(N)."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MicroBatchIndices:
    epoch: int            # the epoch the micro batch starts in
    global_index: int     # k, its index in the global order of micro batches (seeds device masking)
    indices: np.ndarray   # (B,) int64 sample indices
    epochs: np.ndarray | None = None  # (B,) int64 the epoch of each sample (differs where the batch wraps)


class MicroBatchSampler:
    """Micro batches of `micro_batch` sample indices out of `num_samples` for rank `rank` of `world`.

    Raises ValueError when the sizes are not positive or rank is outside [0, world)."""

    def __init__(self, num_samples: int, micro_batch: int, rank: int = 0, world: int = 1, seed: int = 0,
                 shuffle: bool = True):
        if num_samples < 1 or micro_batch < 1 or world < 1:
            raise ValueError(f"sampler needs positive sizes, got {num_samples} samples, micro batch {micro_batch}, "
                             f"{world} ranks")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside a world of {world}")
        self.num_samples, self.micro_batch, self.rank, self.world = num_samples, micro_batch, rank, world
        self.seed, self.shuffle = seed, shuffle
        self._epoch, self._order = -1, None
        self._lock = threading.Lock()  # batches may be built ahead in a prefetch thread

    def order(self, epoch: int) -> np.ndarray:
        """(N,) the sample order of `epoch` (cached for the latest epoch asked)."""
        with self._lock:
            if epoch != self._epoch:
                self._order = (np.random.default_rng([self.seed, epoch, 7]).permutation(self.num_samples)
                               if self.shuffle else np.arange(self.num_samples))
                self._epoch = epoch
            return self._order

    def indices(self, position: int) -> MicroBatchIndices:
        """This rank's micro batch number `position` (0, 1, ...)."""
        k = position * self.world + self.rank
        n, b = self.num_samples, self.micro_batch
        epoch, first = divmod(k * b, n)
        order = self.order(epoch)
        if first + b <= n:
            idx = order[first:first + b]
        else:  # wraps into the next epoch's order (possibly more than once for tiny N)
            parts, need, e, start = [], b, epoch, first
            while need > 0:
                chunk = self.order(e)[start:start + need]
                parts.append(chunk)
                need -= len(chunk)
                e, start = e + 1, 0
            idx = np.concatenate(parts)
        return MicroBatchIndices(epoch, k, idx, (k * b + np.arange(b, dtype=np.int64)) // n)

    def micro_batches_per_epoch(self) -> float:
        """Micro batches per rank that make one pass over the samples (fractional)."""
        return self.num_samples / (self.micro_batch * self.world)


def remap_position(position: int, saved_world: int, saved_micro_batch: int, world: int, micro_batch: int) -> int:
    """A rank's position after resuming on `world` ranks with `micro_batch` from a checkpoint whose ranks had each
    taken `position` micro batches of `saved_micro_batch` on `saved_world` ranks. Every rank takes one micro batch
    per round, so the samples consumed in the global order are position x saved_world x saved_micro_batch, the same
    number on every rank; the new position continues the global order at that sample: no sample is skipped or seen
    twice. Raises ValueError when that sample count is not a whole number of the new rounds (the global batch must
    divide by micro_batch x world, which the trainer checks first)."""
    samples = position * saved_world * saved_micro_batch
    per_round = world * micro_batch
    if samples % per_round:
        raise ValueError(f"{samples} samples consumed ({saved_world} ranks x {position} micro batches of "
                         f"{saved_micro_batch}) are not a whole number of rounds of {world} x {micro_batch}")
    return samples // per_round
