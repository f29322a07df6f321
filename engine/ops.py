"""The encoder's hot ops and the LAMB step, each one function that dispatches on a backend through `_OPS`: 'none'
runs the pure-torch reference (kernels/reference.py; for the MLM loss on CPU tensors its blocked form,
kernels/mlm_loss_cpu.py), 'triton' the fused kernel (kernels/<op>.py), imported on first
use, so the 'none' path never imports Triton. Model code calls only these, so switching backends never touches the
model.

Layouts (FlashAttention's): padded q/k/v are (B, S, nh, d) with key_padding_mask (B, S) bool, True = real token;
unpadded ("varlen") q/k/v are (total, nh, d) with cu_seqlens (B + 1,) int32 and max_seqlen."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from bertforge.errors import ConfigError

from bertforge.kernels import reference
from bertforge.kernels._common import is_interpreting
from bertforge.kernels.embedding_cpu import embedding_cpu
from bertforge.kernels.mlm_loss_cpu import masked_lm_loss_cpu

BACKENDS = ("none", "triton")


# Loaders of the Triton kernels: plain import statements, which torch.compile traces on a first call inside a compiled
# region (importlib would break the graph).
def _attention_kernel():
    from bertforge.kernels.attention import attention
    return attention


def _attention_rows_kernel():
    from bertforge.kernels.attention_rows import attention_rows
    return attention_rows


def _bias_gelu_kernel():
    from bertforge.kernels.bias_gelu import bias_gelu
    return bias_gelu


def _bias_dropout_add_layernorm_kernel():
    from bertforge.kernels.layer_norm import bias_dropout_add_layernorm
    return bias_dropout_add_layernorm


def _masked_lm_loss_kernel():
    from bertforge.kernels.mlm_loss import masked_lm_loss
    return masked_lm_loss


def _dropout_kernel():
    from bertforge.kernels.dropout import dropout
    return dropout


def _mlm_mask_kernel():
    from bertforge.kernels.masking import mlm_mask
    return mlm_mask


def _lamb_step_kernel():
    from bertforge.kernels.lamb import fused_lamb_step
    return fused_lamb_step


# op -> (backend 'none': the pure-torch reference, backend 'triton': loader of the kernel)
_OPS: dict[str, tuple[Callable, Callable[[], Callable]]] = {
    "attention": (reference.attention_ref, _attention_kernel),
    "attention_rows": (reference.attention_varlen_rows_ref, _attention_rows_kernel),
    "bias_gelu": (reference.bias_gelu_ref, _bias_gelu_kernel),
    "bias_dropout_add_layernorm": (reference.bias_dropout_add_layernorm_ref, _bias_dropout_add_layernorm_kernel),
    "dropout": (reference.dropout_ref, _dropout_kernel),
    "masked_lm_loss": (masked_lm_loss_cpu, _masked_lm_loss_kernel),  # masked_lm_loss_ref off CPU
    "mlm_mask": (reference.mlm_mask_ref, _mlm_mask_kernel),
    "lamb_step": (reference.lamb_step_ref, _lamb_step_kernel),
}
_kernels: dict[str, Callable] = {}  # op -> kernel function, filled on first use


def _impl(op: str, backend: str) -> Callable:
    if backend == "none":
        return _OPS[op][0]
    if backend == "triton":
        fn = _kernels.get(op)
        return fn if fn is not None else _load_kernel(op)
    raise ValueError(f"unknown kernel backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def _load_kernel(op: str) -> Callable:
    try:
        fn = _OPS[op][1]()
    except ModuleNotFoundError as exc:
        if exc.name != "triton" and not (exc.name or "").startswith("triton."):
            raise
        raise ConfigError("kernels='triton' needs the `triton` package, which is not installed; "
                          "install it or use kernels='none' (--kernels none)") from None
    _kernels[op] = fn
    return fn


# ---- attention ---------------------------------------------------------------------------------------------------
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, key_padding_mask: torch.Tensor | None = None,
              cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None, dropout_p: float = 0.0,
              softmax_scale: float | None = None, autotune: bool = True, dq_atomic: bool = False,
              seed: torch.Tensor | None = None, row_ids: torch.Tensor | None = None, dropout_bits: int = 8,
              backend: str = "none") -> torch.Tensor:
    """Bidirectional multi-head attention. Padded: q, k, v (B, S, nh, d), key_padding_mask (B, S) or None.
    Unpadded: q, k, v (total, nh, d) with cu_seqlens (B+1,) int32 and max_seqlen. Returns q's layout.
    seed, row_ids: the dropout's Philox key (1,) int64 and per-sequence row ids (B,) int64: both backends then drop
    the same elements (kernels/attention.py's rule; the reference replays it in a naive attention). seed None: the
    kernel draws its own key, the reference lets torch draw the mask. dropout_bits 8 or 24: random bits per element
    (16 or 4 elements a Philox call); either backend applies quantized_dropout_p(dropout_p, dropout_bits).
    autotune, dq_atomic: settings of the Triton kernel (bertforge.kernels.attention.attention); the reference ignores them."""
    if softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(q.shape[-1])
    kw = dict(key_padding_mask=key_padding_mask, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen, dropout_p=dropout_p,
              softmax_scale=softmax_scale, seed=seed, row_ids=row_ids, dropout_bits=dropout_bits)
    if backend == "triton":
        kw.update(autotune=autotune, dq_atomic=dq_atomic)
    return _impl("attention", backend)(q, k, v, **kw)


# The last layer's attention on its query rows only (`attention_rows`), wherever a backend has it. Off (False): every
# query is computed and the rows selected afterwards (the benchmarks' `ours-all-queries` row measures the difference).
QUERY_ROWS = True


def attention_rows_supported(backend: str, device: torch.device, unpadded: bool) -> bool:
    """Whether `attention_rows` serves this backend, device and layout (unpadded only): kernels='none' on CPU
    outside torch.compile (reference.query_rows_supported), kernels='triton' where its kernels run (a CUDA device,
    or CPU tensors under the Triton interpreter, TRITON_INTERPRET=1); nowhere while QUERY_ROWS is False."""
    device = torch.device(device)
    if not QUERY_ROWS:
        return False
    if backend == "triton":
        return unpadded and (device.type == "cuda" or (device.type == "cpu" and is_interpreting()))
    return backend == "none" and reference.query_rows_supported(device, unpadded)


def attention_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, cu_seqlens: torch.Tensor,
                   q_rows: torch.Tensor, max_seqlen: int | None = None, dropout_p: float = 0.0,
                   softmax_scale: float | None = None, seed: torch.Tensor | None = None,
                   row_ids: torch.Tensor | None = None, dropout_bits: int = 8, autotune: bool = True,
                   backend: str = "none") -> torch.Tensor:
    """Unpadded attention for the query rows of the tokens at flat indices q_rows (n,) only (any order):
    q (n, nh, d), k, v (total, nh, d), cu_seqlens (B + 1,) int32 -> (n, nh, d), row r equal to `attention`'s output
    at token q_rows[r] (same dropout elements for the same seed and row_ids). FlashAttention's varlen attention
    with cu_seqlens_q != cu_seqlens_k. 'none': bertforge.kernels.reference.attention_varlen_rows_ref; 'triton':
    bertforge.kernels.attention_rows (max_seqlen, the longest sequence, spares it a device sync; a smaller one is
    refused for CPU tensors, unchecked on a GPU (wrong rows and gradients); autotune as `attention`). ConfigError
    where not `attention_rows_supported` (the caller computes every query and selects the rows instead)."""
    if not attention_rows_supported(backend, q.device, cu_seqlens is not None):
        raise ConfigError(f"attention for a subset of query rows needs an unpadded batch and kernels='none' on CPU "
                          f"or kernels='triton' on a GPU (or under TRITON_INTERPRET=1), not kernels={backend!r} on "
                          f"{q.device.type}; compute every query and select the rows")
    kw = dict(dropout_p=dropout_p, softmax_scale=softmax_scale, seed=seed, row_ids=row_ids, dropout_bits=dropout_bits)
    if backend == "triton":
        kw.update(max_seqlen=max_seqlen, autotune=autotune)
    return _impl("attention_rows", backend)(q, k, v, cu_seqlens, q_rows, **kw)


# ---- FFN epilogue: bias + GELU -----------------------------------------------------------------------------------
def bias_gelu(x: torch.Tensor, bias: torch.Tensor, approximate: str = "none", backend: str = "none") -> torch.Tensor:
    """gelu(x + bias); approximate 'none' is BERT's exact erf GELU, 'tanh' the approximation. x (..., n), bias (n,)."""
    return _impl("bias_gelu", backend)(x, bias, approximate=approximate)


# ---- post-LN epilogue: bias + dropout + residual add + LayerNorm -------------------------------------------------
def bias_dropout_add_layernorm(x: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                               ln_bias: torch.Tensor, eps: float, dropout_p: float = 0.0,
                               seed: torch.Tensor | None = None, row_ids: torch.Tensor | None = None,
                               dropout_bits: int = 8, backend: str = "none") -> torch.Tensor:
    """LayerNorm(residual + dropout(x + bias)) with fp32 statistics. x, residual (..., h); vectors (h,).
    dropout_p must already be 0 outside training. seed (1,) int64 and row_ids (n_rows,) int64 of the flattened rows:
    the Philox mask of kernels/layer_norm.py on both backends (seed None and dropout_bits: as `attention`)."""
    return _impl("bias_dropout_add_layernorm", backend)(x, bias, residual, weight, ln_bias, eps, dropout_p,
                                                        seed=seed, row_ids=row_ids, dropout_bits=dropout_bits)


# ---- a dense layer and its epilogue -------------------------------------------------------------------------------
# The reference path adds the bias inside the GEMM (addmm: no separate pass over the (n, out) output, and under
# autocast the bias joins the low-precision GEMM instead of promoting its output to fp32); the Triton path runs the
# GEMM without bias and adds it in the fused epilogue. Both compute epilogue(x @ weight.T + bias).
def linear_bias_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, approximate: str = "none",
                     backend: str = "none") -> torch.Tensor:
    """gelu(x @ weight.T + bias). x (..., k), weight (n, k), bias (n,) -> (..., n)."""
    if backend == "none":
        return F.gelu(F.linear(x, weight, bias), approximate=approximate)
    return bias_gelu(F.linear(x, weight), bias, approximate, backend=backend)


def linear_bias_dropout_add_layernorm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                                      residual: torch.Tensor, ln_weight: torch.Tensor, ln_bias: torch.Tensor,
                                      eps: float, dropout_p: float = 0.0, seed: torch.Tensor | None = None,
                                      row_ids: torch.Tensor | None = None, dropout_bits: int = 8,
                                      backend: str = "none") -> torch.Tensor:
    """LayerNorm(residual + dropout(x @ weight.T + bias)): `bias_dropout_add_layernorm` after the dense layer.
    x (..., k), weight (h, k), bias (h,), residual (..., h) -> (..., h); the dropout arguments as there."""
    if backend == "none":
        return reference.bias_dropout_add_layernorm_ref(F.linear(x, weight, bias), None, residual, ln_weight,
                                                        ln_bias, eps, dropout_p, seed=seed, row_ids=row_ids,
                                                        dropout_bits=dropout_bits)
    return bias_dropout_add_layernorm(F.linear(x, weight), bias, residual, ln_weight, ln_bias, eps, dropout_p,
                                      seed=seed, row_ids=row_ids, dropout_bits=dropout_bits, backend=backend)


# ---- dropout (the embeddings') -----------------------------------------------------------------------------------
def dropout(x: torch.Tensor, p: float, seed: torch.Tensor | None = None, row_ids: torch.Tensor | None = None,
            dropout_bits: int = 8, backend: str = "none") -> torch.Tensor:
    """dropout(x) over the rows of the (n_rows, h) view, p already 0 outside training. seed (1,) int64 and row_ids
    (n_rows,) int64: the Philox mask of kernels/layer_norm.py's rule on both backends; seed None: the kernel draws
    its own key, the reference is F.dropout (torch's generator). dropout_bits: as `attention`."""
    return _impl("dropout", backend)(x, p, seed=seed, row_ids=row_ids, dropout_bits=dropout_bits)


# ---- per-sample dropout streams ----------------------------------------------------------------------------------
def dropout_site_seed(site: int) -> int:
    """The Philox key of dropout site `site` (bertforge.kernels.reference.dropout_site_seed): per-sample streams differ by
    site through the key, by sample and position through the row ids."""
    return reference.dropout_site_seed(site)


def token_row_ids(sequence_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(n,) int64 Philox row ids of tokens from their sequence's id and their position in it (a hash; see
    bertforge.kernels.reference.token_row_ids). Pure torch on any device, the same for both backends."""
    return reference.token_row_ids(sequence_ids, positions)


# ---- sparse MLM loss ---------------------------------------------------------------------------------------------
def masked_lm_loss(hidden: torch.Tensor, decoder_weight: torch.Tensor, decoder_bias: torch.Tensor,
                   labels: torch.Tensor, backend: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the tied decoder's logits over the masked rows only.
    hidden (n, h) transformed hidden states of the masked positions; decoder_weight (V, h); decoder_bias (V,);
    labels (n,) int64 (rows with -100 are ignored). Returns (mean loss over labelled rows, predicted ids (n,))."""
    return _impl("masked_lm_loss", backend)(hidden, decoder_weight, decoder_bias, labels)


# ---- the word embedding ----------------------------------------------------------------------------------------
def embedding(ids: torch.Tensor, weight: torch.Tensor, padding_idx: int | None = None) -> torch.Tensor:
    """weight[ids]: ids (...) int64, weight (V, h) -> (..., h), as F.embedding (padding_idx's row gets no gradient).
    On CPU tensors that need a gradient kernels/embedding_cpu.py (its (V, h) gradient on memory reused across
    steps), elsewhere F.embedding; either backend."""
    return embedding_cpu(ids, weight, padding_idx)


# ---- MLM masking -------------------------------------------------------------------------------------------------
def mlm_mask(input_ids: torch.Tensor, special_tokens_mask: torch.Tensor, *, mlm_probability: float,
             mask_token_id: int, vocab_size: int, unigram_cdf: torch.Tensor | None, seed: int,
             mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1, backend: str = "none"):
    """BERT's 80/10/10 masking of independently chosen positions (each non-special token with mlm_probability).
    input_ids, special_tokens_mask: same shape, any layout. Returns (masked ids, labels with -100 where not chosen,
    flat indices of the chosen positions ascending). 'triton' runs one Philox pass (kernels/masking.py); 'none' the
    pure-torch reference, same rule and rates but torch's random stream (so the two choose different positions)."""
    return _impl("mlm_mask", backend)(
        input_ids, special_tokens_mask, mlm_probability=mlm_probability, mask_token_id=mask_token_id,
        vocab_size=vocab_size, unigram_cdf=unigram_cdf, seed=seed, mask_replace_prob=mask_replace_prob,
        random_replace_prob=random_replace_prob)


# ---- LAMB --------------------------------------------------------------------------------------------------------
def lamb_step(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
              exp_avg_sqs: list[torch.Tensor], *, lr: float, beta1: float, beta2: float, eps: float,
              weight_decay: float, step: int, bias_correction: bool = True, max_trust_ratio: float | None = 10.0,
              backend: str = "none") -> None:
    """One LAMB step in place on params, exp_avgs and exp_avg_sqs (bertforge.kernels.reference.lamb_step_ref); 'triton' is
    the multi-tensor kernel (fp32 params and states on one device, contiguous)."""
    _impl("lamb_step", backend)(params, grads, exp_avgs, exp_avg_sqs, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                                weight_decay=weight_decay, step=step, bias_correction=bias_correction,
                                max_trust_ratio=max_trust_ratio)
