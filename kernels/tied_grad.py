"""The gradient of a weight shared by the CPU embedding lookup and the CPU MLM decoder (BERT ties the decoder to the
word embedding: one (V, h) parameter, two uses), summed without autograd's fresh (V, h) tensor.

Autograd adds a tied weight's two gradients in place only into one whose storage nothing else holds; both of the
CPU path's live on host memory kept across steps (kernels/host_buffers.py), so it allocates their sum fresh every
step (47 MB at V 30,522 x h 384; a fresh zero-filled tensor of that size costs 16 ms on the 2-core development CPU
in page faults alone). Instead, per forward:
- the embedding's forward (kernels/embedding_cpu.py) `offer`s a `Handoff` for its weight;
- the decoder's forward (kernels/mlm_loss_cpu.py) with the same weight object `claim`s it;
- the decoder's backward, which runs first (the loss is computed after the embedding), `deliver`s its (V, h)
  gradient onto the handoff and returns none to autograd;
- the embedding's backward `collect`s that gradient, index-adds its own rows into it and returns the sum as the
  weight's gradient, the one autograd then sees (a third use of the weight would be summed by autograd as usual).
The sum is the same up to the order of the fp32 additions (rows added one by one onto the decoder's gradient).
If the embedding's backward does not run for a handoff that holds a gradient (a graph cut between the embedding
and the loss), the end of that backward pass raises RuntimeError instead of dropping the decoder's gradient.
Active only while host memory is reused (`host_buffers.reuse`, the `ours-fresh-buffers` benchmark row switches both
off) and `use(True)` (the default)."""
from __future__ import annotations

import weakref

import torch

__all__ = ["Handoff", "claim", "collect", "deliver", "offer", "use"]

_ON = [True]
_PENDING: dict[int, tuple[weakref.ref, "Handoff"]] = {}  # id(weight) -> (the weight, its open handoff)


def use(on: bool = True) -> None:
    """Switch the handoff on (the default) or off for the process (off: autograd sums the two gradients)."""
    _ON[0] = bool(on)
    _PENDING.clear()


class Handoff:
    """One forward's link between the embedding and the decoder of one weight."""

    __slots__ = ("grad", "__weakref__")

    def __init__(self):
        self.grad: torch.Tensor | None = None


def offer(weight: torch.Tensor) -> Handoff | None:
    """The embedding's forward: a new handoff for `weight` (replacing an unclaimed one), or None when off."""
    if not _ON[0]:
        return None
    handoff = Handoff()
    _PENDING[id(weight)] = (weakref.ref(weight), handoff)
    return handoff


def claim(weight: torch.Tensor) -> Handoff | None:
    """The decoder's forward: the open handoff the embedding offered for this very weight object, or None."""
    entry = _PENDING.pop(id(weight), None) if _ON[0] else None
    return entry[1] if entry is not None and entry[0]() is weight else None


def deliver(handoff: Handoff, grad: torch.Tensor) -> None:
    """The decoder's backward: leave its weight gradient for the embedding's backward (and check, at the end of this
    backward pass, that it was collected)."""
    handoff.grad = grad
    ref = weakref.ref(handoff)

    def check():
        h = ref()
        if h is not None and h.grad is not None:
            h.grad = None
            raise RuntimeError("the tied word-embedding / MLM-decoder weight's gradient was not collected: the "
                               "embedding's backward did not run after the decoder's (is the graph cut between the "
                               "embeddings and the MLM loss?); call bertforge.kernels.tied_grad.use(False) to let "
                               "autograd sum the two gradients instead")

    torch.autograd.Variable._execution_engine.queue_callback(check)


def collect(handoff: Handoff | None) -> torch.Tensor | None:
    """The embedding's backward: the decoder's delivered gradient (now the embedding's to add into and return), or
    None when there is none."""
    if handoff is None or handoff.grad is None:
        return None
    grad, handoff.grad = handoff.grad, None
    return grad
