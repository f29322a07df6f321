"""Sparse MLM head loss on CPU tensors: the 'none' backend's `ops.masked_lm_loss` (pure torch, no Triton).

Same result as `reference.masked_lm_loss_ref` (mean cross-entropy of logits = hidden @ decoder_weight.T +
decoder_bias over the labelled rows, and each row's argmax), computed so that a CPU step does less memory traffic:
- the decoder GEMM runs in blocks of `COL_CHUNK` vocabulary columns written straight into the (n, V) logits
  (measured on a 2-core Zen 4 with MKL, n 263 x h 384 x V 30,522: fp32 108 ms as one GEMM, 73 ms in 1,024-column
  blocks; bf16 the same ~35 ms either way);
- the softmax statistics are taken `ROW_CHUNK` rows at a time in an fp32 buffer that stays in L2, reading the
  logits in their own dtype: no fp32 copy of bf16 logits, no (n, V) log-softmax output, no zero-filled (n, V)
  gradient of the NLL, no separate argmax pass (one `max` gives the value and the index);
- the backward overwrites the saved logits with d loss / d logits = (softmax - onehot) * g / n_labelled (the
  subtraction and the scale in fp32, rounded once to the logits' dtype) and returns a contiguous weight gradient;
- the logits, the weight cast to autocast's dtype and the weight gradient live on host memory reused across steps
  (kernels/host_buffers.py: each is ~12-47 MB at V 30,522, above glibc's mmap threshold, so fresh memory would be
  faulted in page by page every step); memory still held elsewhere (a kept `.grad`) is never reused. With the
  decoder tied to the CPU word embedding (BERT's default) the weight gradient is handed to the embedding's backward,
  which adds its rows into it (kernels/tied_grad.py) instead of autograd summing the two into a fresh (V, h) tensor.
Under CPU autocast the GEMMs run in autocast's dtype (as F.linear would) and the weight gradient is rounded once to
the weight's dtype; the softmax, the loss and the bias gradient are fp32. Extra memory beyond the logits: one
ROW_CHUNK x V fp32 buffer. A second backward through the same graph raises (the logits were overwritten)."""
from __future__ import annotations

import torch

from bertforge.kernels import tied_grad
from bertforge.kernels.host_buffers import ReusedBuffer
from bertforge.kernels.reference import IGNORE_INDEX, masked_lm_loss_ref

COL_CHUNK = 1024  # vocabulary columns per decoder GEMM block
ROW_CHUNK = 16  # rows per softmax pass: 16 x 30,522 x 4 bytes = 1.9 MB
# host memory kept across steps (kernels/host_buffers.py): the weight in the GEMMs' dtype, the (n, V) logits, the
# weight gradient
_WEIGHT, _LOGITS, _WEIGHT_GRAD = ReusedBuffer(), ReusedBuffer(), ReusedBuffer()


def masked_lm_loss_cpu(hidden: torch.Tensor, decoder_weight: torch.Tensor, decoder_bias: torch.Tensor,
                       labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden (n, h); decoder_weight (V, h); decoder_bias (V,); labels (n,) int64, -100 = ignored. Returns (mean
    loss over labelled rows (fp32; nan when none is labelled, as torch's cross_entropy), argmax ids (n,)).
    Off CPU, in fp64 (the exact oracle) or under torch.compile this is `masked_lm_loss_ref`."""
    if hidden.device.type != "cpu" or hidden.dtype == torch.float64 or torch.compiler.is_compiling():
        return masked_lm_loss_ref(hidden, decoder_weight, decoder_bias, labels)
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else hidden.dtype
    handoff = tied_grad.claim(decoder_weight) if torch.is_grad_enabled() and decoder_weight.requires_grad else None
    with torch.autocast("cpu", enabled=False):
        return _MaskedLMLossCPU.apply(hidden, decoder_weight, decoder_bias, labels, dtype, handoff)


def _softmax_stats(logits: torch.Tensor, buf: torch.Tensor):
    """-> (logsumexp (n,) fp32, argmax (n,) int64) of each row of logits (n, V), ROW_CHUNK rows at a time."""
    n = logits.shape[0]
    lse = torch.empty(n, dtype=torch.float32)
    pred = torch.empty(n, dtype=torch.int64)
    for s in range(0, n, ROW_CHUNK):
        chunk, b = logits[s:s + ROW_CHUNK], buf[:min(ROW_CHUNK, n - s)]
        m, pred[s:s + ROW_CHUNK] = chunk.max(-1)  # first index on ties, as argmax
        m = m.float()
        b.copy_(chunk).sub_(m[:, None]).exp_()  # (a mixed-dtype sub(out=) would take torch's unvectorised cast)
        lse[s:s + ROW_CHUNK] = b.sum(-1).log_().add_(m)
    return lse, pred


class _MaskedLMLossCPU(torch.autograd.Function):
    """See the module docstring. forward(hidden (n, h), weight (V, h), bias (V,), labels (n,), dtype of the
    GEMMs, the tied embedding's handoff or None) -> (loss (), argmax (n,))."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, dtype, handoff):
        n, V = hidden.shape[0], weight.shape[0]
        x, b = hidden.to(dtype), bias.to(dtype)
        if weight.dtype == dtype:  # keep the forward's storage, as F.linear's saved weight view does: ZeRO-3 swaps
            w = weight.detach()  # a released parameter's .data for an empty tensor before the backward
        else:
            w = _WEIGHT.take(weight.shape, dtype).copy_(weight)
        logits = _LOGITS.take((n, V), dtype)
        for s in range(0, V, COL_CHUNK):
            torch.addmm(b[s:s + COL_CHUNK], x, w[s:s + COL_CHUNK].t(), out=logits[:, s:s + COL_CHUNK])
        buf = torch.empty(min(ROW_CHUNK, n), V, dtype=torch.float32)
        lse, pred = _softmax_stats(logits, buf)
        valid = labels != IGNORE_INDEX
        target = labels.masked_fill(~valid, 0)
        picked = logits.gather(1, target[:, None])[:, 0].float()
        n_valid = valid.sum().float()
        loss = (lse - picked).masked_fill_(~valid, 0.0).sum() / n_valid
        ctx.save_for_backward(x, w, logits, lse, target, valid, n_valid)
        ctx.dtypes, ctx.handoff = (hidden.dtype, weight.dtype, bias.dtype), handoff
        ctx.mark_non_differentiable(pred)
        return loss, pred

    @staticmethod
    def backward(ctx, grad_loss, _grad_pred):
        x, w, logits, lse, target, valid, n_valid = ctx.saved_tensors
        hidden_dtype, weight_dtype, bias_dtype = ctx.dtypes
        n, V = logits.shape
        with torch.autocast("cpu", enabled=False):
            scale = torch.where(valid, grad_loss.float() / n_valid, 0.0)  # (n,) fp32 d loss / d row loss (0 when
            #                                                                  no row is labelled, as torch's)
            buf = torch.empty(min(ROW_CHUNK, n), V, dtype=torch.float32)
            db = torch.zeros(V, dtype=torch.float32)
            for s in range(0, n, ROW_CHUNK):  # logits <- (softmax - onehot) * scale, in place
                chunk, b, sc = logits[s:s + ROW_CHUNK], buf[:min(ROW_CHUNK, n - s)], scale[s:s + ROW_CHUNK, None]
                b.copy_(chunk).sub_(lse[s:s + ROW_CHUNK, None]).exp_().mul_(sc)
                b.scatter_add_(1, target[s:s + ROW_CHUNK, None], -sc)
                db += b.sum(0)  # the bias gradient in fp32 from the unrounded rows
                chunk.copy_(b)
            grad = logits
            dx = dw = None
            if ctx.needs_input_grad[0]:
                dx = torch.mm(grad, w).to(hidden_dtype)
            if ctx.needs_input_grad[1]:
                dw = _WEIGHT_GRAD.take((V, w.shape[1]), weight_dtype)
                for s in range(0, V, COL_CHUNK):
                    block = grad[:, s:s + COL_CHUNK].t()
                    if weight_dtype == grad.dtype:
                        torch.mm(block, x, out=dw[s:s + COL_CHUNK])
                    else:  # the GEMM in autocast's dtype, rounded once to the weight's
                        dw[s:s + COL_CHUNK] = torch.mm(block, x)
        if dw is not None and ctx.handoff is not None:  # the tied embedding's backward adds to it and returns it
            tied_grad.deliver(ctx.handoff, dw)
            dw = None
        return dx, dw, db.to(bias_dtype) if ctx.needs_input_grad[2] else None, None, None, None
