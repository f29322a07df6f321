"""The encoder's hot ops, each behind one function that dispatches on a backend: 'none' runs the pure-torch
reference below, 'triton' runs the fused kernel from the `kernels` package (issue 6). Model code calls only these,
so switching backends never touches the model.

Layouts (FlashAttention's): padded q/k/v are (B, S, nh, d) with key_padding_mask (B, S) bool, True = real token;
unpadded ("varlen") q/k/v are (total, nh, d) with cu_seqlens (B + 1,) int32 and max_seqlen."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from engine.padding import pad_input, unpad_input


def _triton():
    try:
        import kernels  # noqa: F401  (the package exists; each op imports its own module)
        import triton  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"kernels='triton' needs the `triton` package ({exc}); use kernels='none'") from exc
    import kernels.ops as kops  # facade over the Triton kernels (issue 6)

    return kops


# ---- attention ------------------------------------------------------------------------------------------------
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, key_padding_mask: torch.Tensor | None = None,
              cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None, dropout_p: float = 0.0,
              softmax_scale: float | None = None, backend: str = "none") -> torch.Tensor:
    """Bidirectional multi-head attention. Padded: q, k, v (B, S, nh, d), key_padding_mask (B, S) or None.
    Unpadded: q, k, v (total, nh, d) with cu_seqlens (B+1,) int32 and max_seqlen. Returns q's layout."""
    if softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(q.shape[-1])
    if backend == "triton":
        return _triton().attention(q, k, v, key_padding_mask=key_padding_mask, cu_seqlens=cu_seqlens,
                                   max_seqlen=max_seqlen, dropout_p=dropout_p, softmax_scale=softmax_scale)
    if backend != "none":
        raise ValueError(f"unknown kernel backend {backend!r}")
    return attention_ref(q, k, v, key_padding_mask=key_padding_mask, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen,
                         dropout_p=dropout_p, softmax_scale=softmax_scale)


def attention_ref(q, k, v, *, key_padding_mask=None, cu_seqlens=None, max_seqlen=None, dropout_p=0.0,
                  softmax_scale=None):
    """Pure-torch attention through SDPA; the unpadded form is padded to (B, max_seqlen) first."""
    if cu_seqlens is not None:
        if key_padding_mask is not None:
            raise ValueError("attention: pass either key_padding_mask (padded) or cu_seqlens (unpadded), not both")
        if q.dim() != 3:
            raise ValueError(f"attention: unpadded q must be (total, nh, d), got {tuple(q.shape)}")
        lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
        batch = lengths.numel()
        max_len = int(max_seqlen) if max_seqlen is not None else int(lengths.max())
        mask = torch.arange(max_len, device=q.device)[None, :] < lengths[:, None]  # (B, S)
        indices = mask.flatten().nonzero(as_tuple=False).flatten()
        qp, kp, vp = (pad_input(t.flatten(1), indices, batch, max_len).unflatten(-1, t.shape[1:]) for t in (q, k, v))
        out = attention_ref(qp, kp, vp, key_padding_mask=mask, dropout_p=dropout_p, softmax_scale=softmax_scale)
        return out.flatten(0, 1)[indices]
    if q.dim() != 4:
        raise ValueError(f"attention: padded q must be (B, S, nh, d), got {tuple(q.shape)}")
    attn_mask = None
    if key_padding_mask is not None:
        attn_mask = key_padding_mask[:, None, None, :].to(torch.bool)  # (B, 1, 1, S) broadcast over heads, queries
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=attn_mask,
                                         dropout_p=dropout_p, scale=softmax_scale)  # (B, nh, S, d)
    return out.transpose(1, 2)


# ---- FFN epilogue: bias + GELU -----------------------------------------------------------------------------------
def bias_gelu(x: torch.Tensor, bias: torch.Tensor, approximate: str = "none", backend: str = "none") -> torch.Tensor:
    """gelu(x + bias); approximate 'none' is BERT's exact erf GELU, 'tanh' the approximation. x (..., n), bias (n,)."""
    if backend == "triton":
        return _triton().bias_gelu(x, bias, approximate=approximate)
    return bias_gelu_ref(x, bias, approximate)


def bias_gelu_ref(x, bias, approximate="none"):
    return F.gelu(x + bias, approximate=approximate)


# ---- post-LN epilogue: bias + dropout + residual add + LayerNorm -------------------------------------------------
def bias_dropout_add_layernorm(x: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                               ln_bias: torch.Tensor, eps: float, dropout_p: float = 0.0,
                               backend: str = "none") -> torch.Tensor:
    """LayerNorm(residual + dropout(x + bias)) with fp32 statistics. x, residual (..., h); vectors (h,).
    dropout_p must already be 0 outside training."""
    if backend == "triton":
        return _triton().bias_dropout_add_layernorm(x, bias, residual, weight, ln_bias, eps, dropout_p)
    return bias_dropout_add_layernorm_ref(x, bias, residual, weight, ln_bias, eps, dropout_p)


def bias_dropout_add_layernorm_ref(x, bias, residual, weight, ln_bias, eps, dropout_p=0.0):
    y = F.dropout(x + bias, p=dropout_p, training=dropout_p > 0) + residual
    return F.layer_norm(y, (y.shape[-1],), weight, ln_bias, eps)


# ---- sparse MLM loss -------------------------------------------------------------------------------------------
def masked_lm_loss(hidden: torch.Tensor, decoder_weight: torch.Tensor, decoder_bias: torch.Tensor,
                   labels: torch.Tensor, backend: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the tied decoder's logits over the masked rows only.
    hidden (n, h) transformed hidden states of the masked positions; decoder_weight (V, h); decoder_bias (V,);
    labels (n,) int64 (rows with -100 are ignored). Returns (mean loss over labelled rows, predicted ids (n,))."""
    if backend == "triton":
        return _triton().masked_lm_loss(hidden, decoder_weight, decoder_bias, labels)
    return masked_lm_loss_ref(hidden, decoder_weight, decoder_bias, labels)


def masked_lm_loss_ref(hidden, decoder_weight, decoder_bias, labels):
    logits = F.linear(hidden, decoder_weight, decoder_bias).float()  # (n, V)
    loss = F.cross_entropy(logits, labels, ignore_index=-100)
    return loss, logits.detach().argmax(-1)


# ---- MLM masking ------------------------------------------------------------------------------------------------
def mlm_mask(input_ids: torch.Tensor, special_tokens_mask: torch.Tensor, *, mask_prob: float, mask_token_id: int,
             vocab_size: int, unigram_cdf: torch.Tensor | None, seed: int, replace_prob: float = 0.8,
             random_prob: float = 0.1, backend: str = "none"):
    """BERT's 80/10/10 masking of independently chosen positions (each non-special token with mask_prob).
    input_ids, special_tokens_mask: same shape, any layout. Returns (masked ids, labels with -100 where not chosen,
    flat indices of the chosen positions ascending). 'triton' runs one Philox pass (kernels/masking.py); 'none' the
    pure-torch reference, same rule and rates but torch's random stream (so the two choose different positions)."""
    kw = dict(mask_prob=mask_prob, mask_token_id=mask_token_id, vocab_size=vocab_size, unigram_cdf=unigram_cdf,
              seed=seed, replace_prob=replace_prob, random_prob=random_prob)
    if backend == "triton":
        return _triton().mlm_mask(input_ids, special_tokens_mask, **kw)
    if backend != "none":
        raise ValueError(f"unknown kernel backend {backend!r}")
    from kernels.masking import mlm_mask_ref  # pure torch (the module also holds the kernel)

    return mlm_mask_ref(input_ids, special_tokens_mask, **kw)
