"""Build training batches ahead of the step in a background thread, so the accelerator never waits for the loader.

`Prefetcher(source, depth)` wraps a `BatchSource` (engine/data/source.py; `batch_at(position)` is a pure function of
the position) and serves the same batches in the same order as the source's own next_batch(): one worker thread builds
positions p+1 .. p+depth while the step on position p runs (numpy gathers, masking and collation release the GIL for
most of their time). On CUDA the worker also copies every tensor into pinned host memory, so the loop's
`.to(device, non_blocking=True)` is a real asynchronous copy.

`wait_s` accumulates the time the loop spent blocked on a batch that was not ready: the loop logs it as
`data_wait_frac` (share of wall time), the measure of a loader bottleneck. Position and state are the consumed
count, so a checkpoint resumes exactly (batches built ahead are simply rebuilt). depth 0 = no thread."""
from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import torch

from bertforge.data.batch import Batch


class Prefetcher:
    def __init__(self, source, depth: int = 2, pin_memory: bool | None = None):
        if depth < 0:
            raise ValueError(f"prefetch depth must be >= 0, got {depth}")
        if depth and not hasattr(source, "batch_at"):
            raise TypeError(f"{type(source).__name__} has no batch_at(position): it cannot be prefetched")
        self.source, self.depth = source, depth
        self.pin = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.wait_s = 0.0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="bertforge-prefetch") if depth else None
        self._queue: deque = deque()  # (position, future), consecutive from the source's position
        self._next = None  # position of the next batch to schedule

    def __getattr__(self, name):  # vocab_size, tokenizer_dir, held_out_batches, start, masker, ...
        return getattr(self.source, name)

    def _build(self, position: int) -> Batch:
        batch = self.source.batch_at(position)
        return batch.pin_memory() if self.pin else batch

    def next_batch(self) -> Batch:
        t0 = time.perf_counter()
        if not self.depth:
            batch = self.source.next_batch()
            self.wait_s += time.perf_counter() - t0
            return batch
        position = self.source.position
        if not self._queue or self._queue[0][0] != position:  # first call, or the position was reset
            self._drain()
            self._next = position
        while len(self._queue) < self.depth + 1:
            self._queue.append((self._next, self._pool.submit(self._build, self._next)))
            self._next += 1
        _, future = self._queue.popleft()
        batch = future.result()  # re-raises a loader error here, in the loop's thread
        self.source.position = position + 1
        self.wait_s += time.perf_counter() - t0
        return batch

    def _drain(self) -> None:
        while self._queue:
            self._queue.popleft()[1].cancel()

    def state_dict(self) -> dict:
        return self.source.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._drain()
        self.source.load_state_dict(state)

    def close(self) -> None:
        self._drain()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
