"""Dropout at 8-bit thresholds (one Philox call per 16 elements) and at 24-bit ones (per 4): the quantisation rule,
the stream's statistics, and every Triton dropout site (attention forward, its fused and split backward, the post-LN
epilogue's backward) read back bit for bit against the torch oracle and the C++ CPU path (kernels/reference.py,
engine/csrc.py) on awkward shapes. The embeddings' dropout kernel is compared the same way in test_dropout.py."""
import math

import pytest
import torch

from bertforge.config import ModelConfig
from bertforge.errors import ConfigError
from bertforge.kernels import reference as R
from bertforge.kernels.attention import attention
from bertforge.kernels.layer_norm import bias_dropout_add_layernorm

BITS = [8, 24]


def _oracle_and_cpp(fn):
    """fn() (a keep mask of the reference) through the torch oracle and, where the C++ extension is built (the
    kernel tests' side environment has none), through the C++ CPU path: asserted equal, returned."""
    saved = R._NATIVE
    try:
        R.use_native_philox(None)
        want = fn()
        try:
            from bertforge import csrc
        except ImportError:
            return want
        R.use_native_philox(csrc.philox_words, csrc.philox_keep)
        assert torch.equal(fn(), want), "the C++ path (per call) and the torch oracle disagree"
        R.use_native_philox(csrc.philox_words, csrc.philox_keep, csrc.philox_keep_rows, csrc.philox_multiplier_rows)
        assert torch.equal(fn(), want), "the C++ path (whole rows) and the torch oracle disagree"
        return want
    finally:
        R._NATIVE = saved


# ---- the quantisation rule ---------------------------------------------------------------------------------------
def test_p_is_quantised_to_the_nearest_level_and_the_scale_follows():
    assert R.dropout_threshold(0.1) == 26 and R.quantized_dropout_p(0.1) == 26 / 256
    assert R.dropout_scale(0.1) == 256 / 230 and R.dropout_scale(0.1, 24) == 2**24 / (2**24 - 1677722)
    assert R.quantized_dropout_p(0.1, 24) == 1677722 / 2**24
    assert R.dropout_threshold(1.5 / 256) == 2 and R.dropout_threshold(2.5 / 256) == 2  # ties to even
    assert R.dropout_threshold(0.001) == 0 and R.dropout_scale(0.001) == 1.0  # below half a level: no dropout
    assert R.dropout_threshold(0.998) == 255 and R.dropout_threshold(0.999, 24) < 2**24
    with pytest.raises(ValueError, match="keeps nothing; use p < 0.998046875 or dropout_bits=24"):
        R.dropout_threshold(0.999)
    with pytest.raises(ValueError, match="dropout_bits must be 8 or 24"):
        R.dropout_threshold(0.1, 16)


@pytest.mark.parametrize("bits", BITS)
def test_model_config_reports_the_applied_probabilities(bits):
    for p in (0.0, 0.001, 0.05, 0.1, 0.15, 0.3, 0.5, 2.5 / 256, 0.9):
        cfg = ModelConfig(hidden_dropout_prob=p, attention_probs_dropout_prob=p / 2, dropout_bits=bits)
        assert cfg.applied_dropout() == {"hidden_dropout_prob": R.quantized_dropout_p(p, bits),
                                         "attention_probs_dropout_prob": R.quantized_dropout_p(p / 2, bits)}
    assert "dropout_bits" not in ModelConfig(dropout_bits=bits).to_hf_config()


def test_model_config_refuses_bad_bits_and_a_p_that_keeps_nothing():
    with pytest.raises(ConfigError, match="dropout_bits must be 8 or 24, got 16"):
        ModelConfig(dropout_bits=16)
    with pytest.raises(ConfigError, match="hidden_dropout_prob 0.999 rounds to 256/256 at dropout_bits=8"):
        ModelConfig(hidden_dropout_prob=0.999)
    assert ModelConfig(hidden_dropout_prob=0.999, dropout_bits=24).applied_dropout()["hidden_dropout_prob"] < 1


# ---- the stream's statistics -------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("p", [0.1, 0.3])
def test_keep_rate_is_one_minus_the_quantised_p_and_the_mean_is_kept(bits, p):
    """2^22 elements of one site: the keep rate is within 5 sigma of 1 - p_q at every position of a Philox call's
    group (no byte or word is biased), adjacent elements are independent, and dropout(1) averages 1. At 8 bits and
    p = 0.1 the rate is also > 5 sigma away from 1 - p: the quantisation is real, and the scale corrects for it."""
    n_rows, n_cols = 2048, 2048
    n = n_rows * n_cols
    p_q = R.quantized_dropout_p(p, bits)
    keep = R.layer_norm_dropout_keep_ref(2**40 + 7, n_rows, n_cols, p, dropout_bits=bits)
    sigma = math.sqrt(p_q * (1 - p_q) / n)
    rate = keep.double().mean().item()
    assert abs(rate - (1 - p_q)) < 5 * sigma
    if bits == 8 and p == 0.1:
        assert abs(rate - (1 - p)) > 5 * sigma
    group = R.dropout_group(bits)
    per_position = keep.view(n_rows, n_cols // group, group).double().mean(dim=(0, 1))  # (group,)
    assert (per_position - (1 - p_q)).abs().max().item() < 5 * sigma * math.sqrt(group)
    both_dropped = (~keep[:, :-1] & ~keep[:, 1:]).double().mean().item()  # neighbours, inside and across calls
    assert abs(both_dropped - p_q * p_q) < 6 * math.sqrt(p_q * p_q / n)  # overlapping pairs: ~1.2x var
    y = R.dropout_ref(torch.ones(n_rows, n_cols), p, seed=2**40 + 7, dropout_bits=bits)
    assert abs(y.double().mean().item() - 1.0) < 5 * sigma / (1 - p_q)


# ---- every Triton site against the oracle and the C++ path, bit for bit ------------------------------------------
def _attention_masks(lengths, d, p, bits, row_ids):
    """The attention kernel's keep masks read back exactly (B, nh, S, S) bool each, q = 0 so every valid key gets
    probability 1 / L_b: forward (v_j = e_j: out[i, j] = keep * scale / L), the dk/dv pass (dO_i = e_i:
    dv[j, i] = keep * scale / L) and the dq pass (k_j = e_j, v = dO = e_0: dq[i, j] = (keep * scale - delta_i) / L
    times the softmax scale, > 0 exactly where kept unless the whole row is kept, where it is 0)."""
    B, S, nh = len(lengths), max(lengths), 2
    mask = torch.arange(S)[None, :] < torch.tensor(lengths)[:, None]  # (B, S)
    eye = torch.eye(S, d)[None, :, None, :].expand(B, S, nh, d)  # row j = e_j
    e0 = torch.zeros(B, S, nh, d)
    e0[..., 0] = 1
    zeros = torch.zeros(B, S, nh, d)
    kw = dict(key_padding_mask=mask, dropout_p=p, seed=torch.tensor([2**33 + 5]), row_ids=row_ids,
              dropout_bits=bits)

    def run(q, k, v, dout):
        q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
        out = attention(q, k, v, **kw)
        out.backward(dout * mask[:, :, None, None])
        return out.detach(), q.grad, v.grad

    out, _, dv = run(zeros, torch.randn(B, S, nh, d), eye, eye)
    _, dq, _ = run(zeros, eye, e0, e0)
    cut = lambda t: t[..., :S].permute(0, 2, 1, 3)  # noqa: E731  (B, S, nh, d) -> (B, nh, S, S)
    return cut(out) > 0, cut(dv).transpose(-1, -2) > 0, cut(dq) > 0, mask


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("seq,d", [(50, 64), (100, 128)], ids=["fused-backward", "split-backward"])
def test_attention_forward_and_backward_masks_are_the_references(bits, seq, d):
    """Lengths seq, seq - 13 and 1 (not group multiples), per-sample row ids past 2^32: the forward's mask, the
    dk/dv pass's and the dq pass's (the fused one-program backward for <= 64 keys under the interpreter, the
    dk/dv + dq kernels beyond) all equal `attention_dropout_keep_ref`."""
    lengths, p = [seq, seq - 13, 1], 0.3
    row_ids = torch.tensor([2**40 + 3, 7, 2**62 - 1])
    fwd, bwd_dv, bwd_dq, mask = _attention_masks(lengths, d, p, bits, row_ids)
    want = _oracle_and_cpp(lambda: R.attention_dropout_keep_ref(2**33 + 5, 3, 2, seq, p, row_ids,
                                                                dropout_bits=bits))
    valid = (mask[:, None, :, None] & mask[:, None, None, :]).expand_as(want)  # real (query, key) pairs
    assert torch.equal(fwd[valid], want[valid])
    assert torch.equal(bwd_dv[valid], want[valid])
    row_all_kept = (want | ~valid).all(-1, keepdim=True)
    assert torch.equal(bwd_dq[valid], (want & ~row_all_kept)[valid])
    assert not fwd[~valid].any()


@pytest.mark.parametrize("bits", BITS)
def test_epilogue_backward_mask_is_the_forwards(bits):
    """The post-LN epilogue's backward drops exactly the forward's elements: dx = keep * scale * dresidual bit for
    bit, on 13 rows of 37 columns (two 16-groups and a partial one) with row ids."""
    g = torch.Generator().manual_seed(3)
    x, res, dy = (torch.randn(13, 37, generator=g) for _ in range(3))
    bias, w, lnb = torch.randn(37, generator=g), torch.rand(37, generator=g) + 0.5, torch.randn(37, generator=g)
    rows = torch.randint(0, 2**62, (13,), generator=g)
    x.requires_grad_()
    res.requires_grad_()
    out = bias_dropout_add_layernorm(x, bias, res, w, lnb, 1e-12, 0.3, seed=torch.tensor([99]), row_ids=rows,
                                     dropout_bits=bits)
    out.backward(dy)
    keep = _oracle_and_cpp(lambda: R.layer_norm_dropout_keep_ref(99, 13, 37, 0.3, rows, dropout_bits=bits))
    scale = torch.tensor(R.dropout_scale(0.3, bits), dtype=torch.float32)
    assert torch.equal(x.grad, torch.where(keep, res.grad * scale, 0.0))
