"""kernels/masking.py: bit-identical to the pure-torch reference fed the kernel's Philox uniforms, deterministic per
seed, special tokens never chosen, 15% and 80/10/10 rates within binomial bounds, unigram draws follow the cdf."""
import math

import pytest
import torch

from bertforge.kernels.masking import mlm_mask, philox_uniforms
from bertforge.kernels.reference import mlm_mask_ref, unigram_cdf_from_counts

MASK_ID, V = 103, 1009


def _batch(shape, seed=0, pad_frac=0.2):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(200, V, shape, generator=g)
    special = torch.rand(shape, generator=g) < pad_frac
    ids[special] = 0
    if len(shape) == 2:  # [CLS] ... [SEP]
        ids[:, 0], ids[:, -1] = 101, 102
        special[:, 0] = special[:, -1] = True
    return ids, special


def _bound(n, p, sigmas=5.0):
    return sigmas * math.sqrt(n * p * (1 - p)) + 1


@pytest.mark.parametrize("shape", [(1, 7), (3, 129), (5000,), (4, 4099)])
@pytest.mark.parametrize("unigram", [False, True])
def test_bit_identical_to_reference(shape, unigram):
    ids, special = _batch(shape, seed=shape[-1])
    counts = torch.arange(V, dtype=torch.float64) % 7  # zero counts included
    cdf = unigram_cdf_from_counts(counts) if unigram else None
    kw = dict(mlm_probability=0.3, mask_token_id=MASK_ID, vocab_size=V, unigram_cdf=cdf, mask_replace_prob=0.5,
              random_replace_prob=0.3)
    out, labels, pos = mlm_mask(ids, special, seed=11, offset=3, **kw)
    u = philox_uniforms(11, 3, ids.numel())
    r_out, r_labels, r_pos = mlm_mask_ref(ids, special, uniforms=u, **kw)
    assert out.dtype == ids.dtype and out.shape == ids.shape and labels.dtype == torch.int64
    assert torch.equal(out, r_out) and torch.equal(labels, r_labels) and torch.equal(pos, r_pos)
    assert torch.equal(pos, (labels.flatten() != -100).nonzero().flatten())  # sorted ascending, matches labels
    assert not special.flatten()[pos].any()
    assert torch.equal(labels.flatten()[pos], ids.flatten()[pos])


def test_deterministic_and_seeded():
    ids, special = _batch((8, 257))
    kw = dict(mask_token_id=MASK_ID, vocab_size=V)
    a = mlm_mask(ids, special, seed=5, **kw)
    b = mlm_mask(ids, special, seed=5, **kw)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[1], mlm_mask(ids, special, seed=6, **kw)[1])
    assert not torch.equal(a[1], mlm_mask(ids, special, seed=5, offset=1, **kw)[1])
    # an offset splits one stream: masking the second half alone with offset = half reproduces the whole
    flat_ids, flat_special = ids.flatten(), special.flatten()
    half = flat_ids.numel() // 2
    whole = mlm_mask(flat_ids, flat_special, seed=5, **kw)[1]
    second = mlm_mask(flat_ids[half:], flat_special[half:], seed=5, offset=half, **kw)[1]
    assert torch.equal(whole[half:], second)


def test_rates_within_binomial_bounds():
    ids, special = _batch((16, 4096), seed=3)
    out, labels, pos = mlm_mask(ids, special, mask_token_id=MASK_ID, vocab_size=V, seed=1234)
    eligible = int((~special).sum())
    n = pos.numel()
    assert abs(n - 0.15 * eligible) < _bound(eligible, 0.15)
    chosen_out, chosen_ids = out.flatten()[pos], ids.flatten()[pos]
    n_mask = int((chosen_out == MASK_ID).sum())
    n_keep = int((chosen_out == chosen_ids).sum())  # includes random draws that hit the same token (p = 1/V)
    n_random = n - n_mask - n_keep
    assert abs(n_mask - 0.8 * n) < _bound(n, 0.8)
    assert abs(n_random - 0.1 * n) < _bound(n, 0.1) + 0.1 * n / V * 5
    assert abs(n_keep - 0.1 * n) < _bound(n, 0.1) + 0.1 * n / V * 5
    unchosen = labels == -100
    assert torch.equal(out[unchosen], ids[unchosen])


def test_unigram_replacement_follows_distribution():
    """All chosen positions get a random token: counts per token within binomial bounds of the unigram law."""
    probs = torch.tensor([0.0, 0.5, 0.0, 0.25, 0.125, 0.0625, 0.0625, 0.0])
    cdf = torch.cumsum(probs, 0)
    n = 60000
    ids = torch.full((n,), 7)
    out, _, pos = mlm_mask(ids, torch.zeros(n, dtype=torch.bool), mlm_probability=1.0, mask_token_id=MASK_ID,
                           vocab_size=8, unigram_cdf=cdf, mask_replace_prob=0.0, random_replace_prob=1.0, seed=2)
    assert pos.numel() == n
    counts = torch.bincount(out, minlength=8)
    for tok in range(8):
        assert abs(counts[tok].item() - n * probs[tok].item()) < _bound(n, probs[tok].item()), (tok, counts)


def test_uniform_replacement_covers_vocab():
    n = 40000
    out, _, _ = mlm_mask(torch.zeros(n, dtype=torch.int64), torch.zeros(n, dtype=torch.bool), mlm_probability=1.0,
                         mask_token_id=MASK_ID, vocab_size=10, mask_replace_prob=0.0, random_replace_prob=1.0, seed=9)
    counts = torch.bincount(out, minlength=10)
    assert counts.numel() == 10 and (counts - n / 10).abs().max() < _bound(n, 0.1)


def test_all_special_and_empty():
    ids, special = _batch((2, 33))
    out, labels, pos = mlm_mask(ids, torch.ones_like(special), mask_token_id=MASK_ID, vocab_size=V, seed=0)
    assert pos.numel() == 0 and torch.equal(out, ids) and (labels == -100).all()
    out, labels, pos = mlm_mask(ids[:, :0], special[:, :0], mask_token_id=MASK_ID, vocab_size=V, seed=0)
    assert out.shape == (2, 0) and pos.numel() == 0
