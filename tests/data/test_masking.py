import numpy as np
import pytest
import torch

from bertforge.data.masking import Masker, mask_tokens, replacement_distribution

VOCAB, MASK = 1000, 4


def batch(B=64, S=97, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, S + 1, B)
    ids = rng.integers(5, VOCAB, (B, S))
    special = np.arange(S)[None, :] >= lengths[:, None] - 1
    special[:, 0] = True
    ids[special] = 0
    return ids, special


def test_counts_ratios_and_labels():
    ids, special = batch(B=400)
    out, labels = Masker(MASK, replacement_distribution(VOCAB, range(5)), seed=1)(ids, special)
    chosen = labels != -100
    n = (~special).sum(1)
    assert (chosen.sum(1) == np.maximum(1, np.floor(0.15 * n + 0.5))).all()  # BERT's per-sequence count
    assert not chosen[special].any() and (labels[chosen] == ids[chosen]).all()
    assert (out[~chosen] == ids[~chosen]).all()
    k = chosen.sum()
    for share, want in [((out[chosen] == MASK).mean(), 0.8), ((out[chosen] == ids[chosen]).mean(), 0.1)]:
        assert abs(share - want) < 4 * np.sqrt(want * (1 - want) / k)
    assert (out[chosen & (out != MASK)] >= 5).all()  # random replacements are never special


def test_deterministic_per_sample_not_per_batch():
    ids, special = batch()
    m = Masker(MASK, replacement_distribution(VOCAB, range(5)), seed=7)
    sid = np.arange(64) + 5000
    full = m(ids, special, epoch=3, sample_ids=sid)
    part = m(ids[10:20], special[10:20], epoch=3, sample_ids=sid[10:20])
    assert all(np.array_equal(f[10:20], p) for f, p in zip(full, part))
    padded = m(np.pad(ids, ((0, 0), (0, 31))), np.pad(special, ((0, 0), (0, 31)), constant_values=True), 3, sid)
    assert all(np.array_equal(f, p[:, :97]) for f, p in zip(full, padded))  # padding does not move the masks
    other_epoch = m(ids, special, epoch=4, sample_ids=sid)
    assert not np.array_equal(full[1], other_epoch[1])


def test_unigram_replacement_follows_counts():
    ids, special = batch(B=2000)
    counts = np.zeros(VOCAB)
    counts[[10, 11]] = [3, 1]
    m = Masker(MASK, replacement_distribution(VOCAB, range(5), counts), seed=2, mask_replace_prob=0.0, random_replace_prob=1.0)
    out, labels = m(ids, special)
    drawn = out[labels != -100]
    assert set(np.unique(drawn)) == {10, 11} and abs((drawn == 10).mean() - 0.75) < 0.03


def test_whole_word_masks_words_together():
    ids, special = batch(B=200, seed=3)
    rng = np.random.default_rng(4)
    word_start = rng.random(ids.shape) < 0.5
    out, labels = Masker(MASK, replacement_distribution(VOCAB, range(5)), seed=5)(ids, special,
                                                                                  word_start=word_start)
    chosen = labels != -100
    word_start = word_start | special
    for r in range(len(ids)):
        words = np.split(np.arange(ids.shape[1]), np.flatnonzero(word_start[r])[1:])
        for w in words:
            c = chosen[r, w][~special[r, w]]
            assert c.all() or not c.any()
    assert not chosen[special].any()
    n = (~special).sum()
    assert 0.10 < chosen.sum() / n < 0.16


def test_functional_torch_and_generator():
    ids, special = batch()
    t_out, t_lab = mask_tokens(torch.from_numpy(ids), torch.from_numpy(special), 11, mask_token_id=MASK,
                               vocab_size=VOCAB, special_ids=range(5))
    n_out, n_lab = mask_tokens(ids, special, 11, mask_token_id=MASK, vocab_size=VOCAB, special_ids=range(5))
    assert isinstance(t_out, torch.Tensor) and t_out.dtype == torch.int64
    assert np.array_equal(t_out.numpy(), n_out) and np.array_equal(t_lab.numpy(), n_lab)
    g1, g2 = (mask_tokens(ids, special, np.random.default_rng(1), mask_token_id=MASK, vocab_size=VOCAB)
              for _ in range(2))
    assert np.array_equal(g1[0], g2[0])
    with pytest.raises(ValueError):
        Masker(MASK, np.ones(VOCAB), mlm_probability=0.0)
