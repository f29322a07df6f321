"""Reusable host (CPU) memory for the large per-step tensors of the CPU training path.

glibc serves an allocation above its mmap threshold (at most 32 MiB by default, 1 MiB under `bertforge pretrain`'s
pin, engine/malloc.py) with fresh pages from the kernel, and every first touch of such a page faults. A step of the
MiniLM-shaped pretraining benchmark allocates several such tensors of (V, h) = 30,522 x 384 each step (the word
embedding's gradient, the decoder's gradient, the decoder weight cast to autocast's dtype, the (n, V) MLM logits);
on the 2-core development CPU a fresh zero-filled 47 MB tensor takes 16 ms, the same fill of memory already touched
1.2 ms. `ReusedBuffer` keeps one storage across steps and hands it out again only when no other tensor still holds
it: its use count (c10's intrusive count of the storage) is then 1, ours. A tensor handed out can therefore be given
to autograd as a gradient (AccumulateGrad keeps it as `param.grad` without a copy) and is reused only after
`zero_grad(set_to_none=True)`, a DeepSpeed reduction or the end of the step has dropped every reference to it; while
anyone holds it (a retained `.grad`, a view of it, gradient accumulation) a fresh tensor is allocated instead, as
without this module. The same idea as the CUDA caching allocator, for a handful of known tensors.
Limit: autograd adds two gradients of one tensor (a tied weight's) in place only into one whose storage has no
other owner; a kept buffer has one (this module), so such a sum is a fresh tensor, as it would be without reuse.
BERT's word embedding / MLM decoder tie avoids it by handing one gradient to the other's backward
(kernels/tied_grad.py)."""
from __future__ import annotations

import math

import torch

__all__ = ["BufferPool", "ReusedBuffer", "reuse", "reusing"]

_REUSE = [True]


def reuse(on: bool = True) -> None:
    """Switch reuse on (the default) or off for every ReusedBuffer of the process: off, `take` allocates fresh
    memory each call and keeps none (what the benchmarks' ablation row measures) and the CPU embedding is
    F.embedding."""
    _REUSE[0] = bool(on)


def reusing() -> bool:
    """Whether ReusedBuffer memory is reused (see `reuse`)."""
    return _REUSE[0]


def _use_count(storage: torch.UntypedStorage) -> int:
    return torch._C._storage_Use_Count(storage._cdata)


class ReusedBuffer:
    """One storage of host memory reused across calls of `take`. Not thread-safe (one per module and purpose)."""

    def __init__(self):
        self._storage: torch.UntypedStorage | None = None

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised contiguous CPU tensor of `shape` and `dtype`: on the kept storage when nothing else
        holds it and it is large enough, else on a fresh allocation (1/8 larger, for shapes that vary a little
        from step to step) that becomes the kept storage (a storage still in use is left to its users)."""
        if not _REUSE[0]:
            self._storage = None
            return torch.empty(shape, dtype=dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        kept = self._storage
        if kept is not None and kept.nbytes() >= nbytes and _use_count(kept) == 1:
            return torch.empty(0, dtype=dtype).set_(kept, 0, shape)
        self._storage = torch.empty(nbytes + nbytes // 8, dtype=torch.uint8).untyped_storage()  # room for shapes
        return torch.empty(0, dtype=dtype).set_(self._storage, 0, shape)  # that vary from step to step (n rows)

    def free_for(self, nbytes: int | None = None) -> bool:
        """Whether `take` would hand out the kept storage now (for `nbytes` bytes; None: of any size)."""
        kept = self._storage
        return kept is not None and (nbytes is None or kept.nbytes() >= nbytes) and _use_count(kept) == 1

    def release(self) -> None:
        """Drop the kept storage (tensors handed out stay valid)."""
        self._storage = None

    @property
    def nbytes(self) -> int:
        """Bytes kept (0 when none)."""
        return 0 if self._storage is None else self._storage.nbytes()


class BufferPool:
    """ReusedBuffers for tensors of one purpose of which several live at once (one per encoder layer, e.g. the dropout
    multipliers autograd keeps from forward to backward). `take` hands out a kept storage that nothing else holds (a
    large enough one first, else one it then grows), else keeps a new one, up to `limit` storages; beyond them it
    allocates fresh memory. Not thread-safe."""

    def __init__(self, limit: int = 64):
        self._buffers: list[ReusedBuffer] = []
        self._limit = limit

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised contiguous CPU tensor of `shape` and `dtype` (as ReusedBuffer.take)."""
        if not _REUSE[0]:
            self._buffers.clear()
            return torch.empty(shape, dtype=dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        free = [b for b in self._buffers if b.free_for()]
        fits = [b for b in free if b.free_for(nbytes)]
        if fits or free:
            return (fits or free)[0].take(shape, dtype)
        if len(self._buffers) >= self._limit:
            return torch.empty(shape, dtype=dtype)
        self._buffers.append(ReusedBuffer())
        return self._buffers[-1].take(shape, dtype)

    @property
    def nbytes(self) -> int:
        """Bytes kept by the pool's storages."""
        return sum(b.nbytes for b in self._buffers)
