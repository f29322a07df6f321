"""Sparse MLM head loss: mean cross-entropy of logits = hidden @ decoder_weight.T + decoder_bias over the masked rows,
fused so the full (n, V) logits never exist at once (the scheme of Liger-Kernel's fused linear cross-entropy).

Forward, per chunk of rows: one GEMM writes the chunk's logits (chunk_rows, V) in hidden's dtype; a Triton kernel makes
one online-logsumexp + argmax pass over each row and, when gradients are wanted, a second pass that overwrites the
logits in place with d summed loss / d logits = softmax - onehot(label) (0 on unlabelled rows); two more GEMMs turn
that into the chunk's hidden gradient and add its share of the decoder weight gradient; the bias gradient is a column
sum. So all gradients are computed in the forward, saved in place of the inputs, and the backward only scales them by
the incoming gradient / n_labelled, in fp32 (the product is rounded once, to the gradient's dtype). The mean's 1 /
n_labelled is never applied to a half-precision intermediate: in fp16, with n_labelled ~ 4,000 masked rows and
softmax ~ 1 / V early in training, (softmax - onehot) / n_labelled ~ 1e-8 lies below fp16's smallest subnormal
(6e-8) and would flush to zero before a loss scale could lift it. Nothing here syncs with the host (n_labelled stays
on the device).

Memory, beyond the inputs and the gradients any implementation returns (n x h, V x h, V):
  one chunk of logits, chunk_rows x V in hidden's dtype (rows padded to a multiple of 64 elements), with chunk_rows <= n / (2 * itemsize) so at most 1/8 of the
  fp32 logits of all rows (n x V x 4 bytes), and at most 2048 rows; plus an fp32 V x h accumulator only when the
  weight is fp32 and hidden is not (autocast).
  Plain torch holds n x V logits in hidden's dtype, their fp32 copy and the fp32 log-softmax for the backward, then
  an fp32 gradient of the same size: >= 3 x (n x V x 4) bytes at its peak.
The weight gradient accumulates chunk by chunk with addmm in the weight's dtype (as Liger) when that is hidden's and
not fp16, else in an fp32 V x h accumulator (fp16's range: the unscaled sums over thousands of rows reach ~1e4);
chunks are few and large.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from bertforge.kernels._common import is_interpreting, next_power_of_2
from bertforge.kernels.reference import IGNORE_INDEX


@triton.jit
def _mlm_ce_kernel(
    LOGITS_ptr,  # (n_rows, V) logits of this chunk in hidden's dtype, row stride `stride` (a multiple of 64),
    #              overwritten with d summed loss / d logits = softmax - onehot in [-1, 1]
    LABELS_ptr,  # (n_rows,) int64, IGNORE_INDEX for unlabelled rows
    LOSS_ptr,  # (n_rows,) fp32 per-row loss (0 for unlabelled rows)
    PRED_ptr,  # (n_rows,) int64 argmax of each row (first index on ties)
    V,
    stride,  # row stride of the logits: V rounded up to a multiple of 64 (aligned rows, vector loads)
    IGNORE: tl.constexpr,
    COMPUTE_GRAD: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    base = LOGITS_ptr + row * stride
    label = tl.load(LABELS_ptr + row)
    valid = label != IGNORE
    cols = tl.arange(0, BLOCK_V)

    # pass 1: online logsumexp (fp32) and argmax over the vocabulary
    m = -float("inf")
    d = 0.0
    best_idx = 0
    # loads and stores are masked at the padded row end (a multiple of 64: whole vectors); the padding's values are
    # replaced here, never used
    for start in range(0, V, BLOCK_V):
        idx = start + cols
        x = tl.load(base + idx, mask=idx < stride, other=0.0).to(tl.float32)
        x = tl.where(idx < V, x, -float("inf"))
        block_max = tl.max(x, axis=0)
        block_arg = tl.argmax(x, axis=0)
        best_idx = tl.where(block_max > m, start + block_arg, best_idx)
        new_m = tl.maximum(m, block_max)
        d = d * tl.exp(m - new_m) + tl.sum(tl.exp(x - new_m), axis=0)
        m = new_m
    lse = m + tl.log(d)
    safe_label = tl.where(valid, label, 0)
    x_label = tl.load(base + safe_label).to(tl.float32)
    tl.store(LOSS_ptr + row, tl.where(valid, lse - x_label, 0.0))
    tl.store(PRED_ptr + row, best_idx.to(tl.int64))

    # pass 2: d summed loss / d logits = softmax - onehot, written over the logits (the mean's 1 / n_valid is applied
    # in fp32 by the backward: see the module docstring)
    if COMPUTE_GRAD:
        scale = tl.where(valid, 1.0, 0.0)
        for start in range(0, V, BLOCK_V):
            idx = start + cols
            x = tl.load(base + idx, mask=idx < stride, other=0.0).to(tl.float32)
            g = tl.exp(tl.where(idx < V, x, -float("inf")) - lse) * scale  # 0 on the padding
            g = tl.where(idx == label, g - scale, g)
            tl.store(base + idx, g.to(LOGITS_ptr.dtype.element_ty), mask=idx < stride)


LOGITS_ROW_ALIGN = 64  # elements: Megatron pads its vocabulary to a multiple of 64 for the same reason


def logits_buffer(rows: int, V: int, dtype, device) -> torch.Tensor:
    """(rows, V) view of a (rows, V rounded up to 64) buffer: every row starts 128-byte aligned in bf16, so the GEMM
    writes and the kernel reads whole vectors (BERT's V = 30,522 is not even a multiple of 8)."""
    padded = -(-V // LOGITS_ROW_ALIGN) * LOGITS_ROW_ALIGN
    return torch.empty(rows, padded, dtype=dtype, device=device)[:, :V]


def _chunk_rows(n: int, itemsize: int) -> int:
    """Rows per chunk: chunk logits <= 1/8 of the full fp32 logits, at most 2048 rows."""
    return max(1, min(2048, n // (2 * itemsize)))


def _grad_weight_dtype(weight_dtype: torch.dtype, dtype: torch.dtype) -> torch.dtype:
    """The decoder weight gradient's accumulator: the weight's dtype when it is hidden's and not fp16, else fp32."""
    return weight_dtype if weight_dtype == dtype and dtype != torch.float16 else torch.float32


def masked_lm_loss_forward(hidden, decoder_weight, decoder_bias, labels, compute_grads=True, chunk_rows=None):
    """Returns (loss (), preds (n,), grad_hidden (n, h) in hidden's dtype | None, grad_weight (V, h) in
    `_grad_weight_dtype` | None, grad_bias (V,) fp32 | None), the gradients of the SUMMED loss over the labelled rows:
    the mean's gradient is these / n_labelled (`_backward` scales them in fp32)."""
    n, h = hidden.shape
    V = decoder_weight.shape[0]
    if decoder_weight.shape != (V, h) or decoder_bias.shape != (V,) or labels.shape != (n,):
        raise ValueError(f"masked_lm_loss: shapes hidden {tuple(hidden.shape)}, weight {tuple(decoder_weight.shape)},"
                         f" bias {tuple(decoder_bias.shape)}, labels {tuple(labels.shape)} do not match")
    dtype, device = hidden.dtype, hidden.device
    hidden = hidden.contiguous()
    w = decoder_weight.to(dtype)  # a copy only when the weight is wider (what autocast would do)
    b = decoder_bias.to(dtype)
    labels = labels.contiguous()
    valid = labels != IGNORE_INDEX
    n_valid = valid.sum(dtype=torch.int64)  # stays on the device: the loss's denominator
    loss_rows = torch.empty(n, dtype=torch.float32, device=device)
    preds = torch.empty(n, dtype=torch.int64, device=device)
    grad_h = grad_w = grad_b = None
    if compute_grads:
        grad_h = torch.empty_like(hidden)
        grad_w = torch.zeros(V, h, dtype=_grad_weight_dtype(decoder_weight.dtype, dtype), device=device)
        grad_b = torch.zeros(V, dtype=torch.float32, device=device)
    chunk = chunk_rows or _chunk_rows(n, hidden.element_size())
    block_v = min(next_power_of_2(V), 32768 if is_interpreting() else 4096)
    buf = logits_buffer(min(chunk, n), V, dtype, device)
    for start in range(0, n, chunk):
        end = min(start + chunk, n)
        h_c = hidden[start:end]  # (c, h)
        logits = torch.addmm(b, h_c, w.t(), out=buf[:end - start])  # (c, V) in hidden's dtype, padded rows
        _mlm_ce_kernel[(end - start,)](logits, labels[start:end], loss_rows[start:end], preds[start:end], V,
                                       logits.stride(0),
                                       IGNORE=IGNORE_INDEX, COMPUTE_GRAD=compute_grads, BLOCK_V=block_v,
                                       num_warps=8 if block_v >= 2048 else 4)
        if compute_grads:  # logits now hold d summed loss / d logits (c, V)
            torch.mm(logits, w, out=grad_h[start:end])
            if grad_w.dtype == dtype:
                grad_w.addmm_(logits.t(), h_c)
            else:
                grad_w += torch.mm(logits.t(), h_c)
            grad_b += logits.sum(0, dtype=torch.float32)
    loss = loss_rows.sum() / n_valid  # nan when nothing is labelled, as torch's cross_entropy
    return loss, preds, grad_h, grad_w, grad_b


# Autograd through a torch.library custom op (the role of an autograd.Function), so torch.compile keeps it opaque: its
# chunk loop depends on the number of masked rows, which changes every batch (traced, it would recompile each step).
@torch.library.custom_op("bertforge::masked_lm_loss_fwd", mutates_args=())
def _loss_op(hidden: torch.Tensor, decoder_weight: torch.Tensor, decoder_bias: torch.Tensor, labels: torch.Tensor,
             compute_grads: bool, chunk_rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                            torch.Tensor]:
    """-> (loss () fp32, preds (n,) int64, grad_hidden, grad_weight, grad_bias) with the gradients of the summed loss
    (see `masked_lm_loss_forward`); the gradients are empty (0,) tensors when compute_grads is False. chunk_rows 0 =
    automatic."""
    loss, preds, gh, gw, gb = masked_lm_loss_forward(hidden, decoder_weight, decoder_bias, labels, compute_grads,
                                                     chunk_rows or None)
    if not compute_grads:
        gh, gw, gb = (hidden.new_empty(0) for _ in range(3))
    return loss, preds, gh, gw, gb


@_loss_op.register_fake
def _(hidden, decoder_weight, decoder_bias, labels, compute_grads, chunk_rows):
    n = hidden.shape[0]
    loss = hidden.new_empty((), dtype=torch.float32)
    preds = hidden.new_empty(n, dtype=torch.int64)
    if not compute_grads:
        return (loss, preds, *(hidden.new_empty(0) for _ in range(3)))
    return (loss, preds, torch.empty_like(hidden, memory_format=torch.contiguous_format),
            decoder_weight.new_empty(decoder_weight.shape, dtype=_grad_weight_dtype(decoder_weight.dtype, hidden.dtype)),
            decoder_bias.new_empty(decoder_bias.shape, dtype=torch.float32))


def _setup_context(ctx, inputs, output):
    _, decoder_weight, decoder_bias, labels, compute_grads, _ = inputs
    _, preds, gh, gw, gb = output
    ctx.mark_non_differentiable(preds)
    ctx.compute_grads = compute_grads
    ctx.dtypes = (decoder_weight.dtype, decoder_bias.dtype)
    ctx.save_for_backward(gh, gw, gb, labels)


def _backward(ctx, dloss, _dpreds, _dgh, _dgw, _dgb):
    """The saved gradients of the summed loss times dloss / n_labelled, a 0-d fp32 factor: each product is taken in
    fp32 and rounded once to the gradient's dtype (with fp16 loss scaling, dloss ~ 2^16 lifts the result into fp16's
    normal range)."""
    if not ctx.compute_grads:
        raise RuntimeError("masked_lm_loss: backward after a forward run without gradients")
    gh, gw, gb, labels = ctx.saved_tensors
    n_valid = (labels != IGNORE_INDEX).sum(dtype=torch.int64).clamp_min(1)
    factor = dloss.float() / n_valid  # 0-d fp32, on the device
    w_dtype, b_dtype = ctx.dtypes
    return gh * factor, (gw * factor).to(w_dtype), (gb * factor).to(b_dtype), None, None, None


_loss_op.register_autograd(_backward, setup_context=_setup_context)


def masked_lm_loss(hidden: torch.Tensor, decoder_weight: torch.Tensor, decoder_bias: torch.Tensor,
                   labels: torch.Tensor, chunk_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden (n, h) transformed hidden states of the masked rows; decoder_weight (V, h); decoder_bias (V,);
    labels (n,) int64, -100 = ignored. Returns (mean loss over labelled rows (fp32 scalar), argmax ids (n,) int64).
    Gradients for hidden, decoder_weight and decoder_bias are computed in the forward (see the module docstring).
    The GEMMs run in hidden's dtype, or in the autocast dtype when autocast is on for hidden's device (whatever
    dtype hidden arrives in: fp32 from an fp32 LayerNorm included); hidden's gradient comes back in its own dtype."""
    compute_grads = torch.is_grad_enabled() and any(t.requires_grad for t in (hidden, decoder_weight, decoder_bias))
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        # The op computes in hidden's dtype. CUDA autocast keeps the head transform's LayerNorm in fp32, so its output
        # arrives in fp32: cast it here (autograd casts the gradient back), or the three decoder GEMMs run in fp32.
        hidden = hidden.to(torch.get_autocast_dtype(device_type))
    with torch.autocast(device_type=device_type, enabled=False):
        loss, preds, _, _, _ = _loss_op(hidden, decoder_weight, decoder_bias, labels, compute_grads, chunk_rows or 0)
    return loss, preds
