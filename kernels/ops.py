"""Facade the engine calls for kernels='triton' (see engine/ops.py for the contracts and layouts).
Each op lives in its own file with its pure-torch reference beside it."""
from __future__ import annotations


def attention(q, k, v, *, key_padding_mask=None, cu_seqlens=None, max_seqlen=None, dropout_p=0.0,
              softmax_scale=None):
    from kernels.attention import attention as _attention

    return _attention(q, k, v, key_padding_mask=key_padding_mask, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen,
                      dropout_p=dropout_p, softmax_scale=softmax_scale)


def bias_gelu(x, bias, approximate="none"):
    from kernels.bias_gelu import bias_gelu as _bias_gelu

    return _bias_gelu(x, bias, approximate=approximate)


def bias_dropout_add_layernorm(x, bias, residual, weight, ln_bias, eps, dropout_p=0.0):
    from kernels.layer_norm import bias_dropout_add_layernorm as _fused

    return _fused(x, bias, residual, weight, ln_bias, eps, dropout_p)


def masked_lm_loss(hidden, decoder_weight, decoder_bias, labels):
    from kernels.mlm_loss import masked_lm_loss as _loss

    return _loss(hidden, decoder_weight, decoder_bias, labels)


def mlm_mask(input_ids, special_tokens_mask, *, mask_prob, mask_token_id, vocab_size, unigram_cdf, seed,
             replace_prob=0.8, random_prob=0.1):
    from kernels.masking import mlm_mask as _mask

    return _mask(input_ids, special_tokens_mask, mask_prob=mask_prob, mask_token_id=mask_token_id,
                 vocab_size=vocab_size, unigram_cdf=unigram_cdf, seed=seed, replace_prob=replace_prob,
                 random_prob=random_prob)
