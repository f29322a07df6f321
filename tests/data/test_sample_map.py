import numpy as np
import pytest

from bertforge.data.indexed import IndexedDataset
from bertforge.data.sample_map import (build_sample_map, build_sample_map_ref, build_sop_map, cached_sample_map,
                                    select_sentences, split_documents)


def synthetic(rng, n_docs, max_sent, max_len, one_sentence_share=0.2):
    """Random corpus: docs of 1..max_sent sentences (some forced to 1), lengths 1..max_len, in one token space."""
    counts = rng.integers(1, max_sent + 1, n_docs)
    counts[rng.random(n_docs) < one_sentence_share] = 1
    lengths = rng.integers(1, max_len + 1, counts.sum())
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return starts, lengths, np.concatenate([[0], np.cumsum(counts)])


def check_invariants(samples, starts, lengths, doc_offsets, max_seq_length):
    a0, a1, b0, b1, rnd = samples.T
    assert ((a1 > a0) & (b1 > b0)).all()
    assert ((a1 - a0) + (b1 - b0) + 3 <= max_seq_length).all()
    assert set(np.unique(rnd)) <= {0, 1}
    doc_of_token = np.searchsorted(starts[doc_offsets[1:-1]], np.stack([a0, a1 - 1, b0, b1 - 1]), side="right")
    assert (doc_of_token[0] == doc_of_token[1]).all() and (doc_of_token[2] == doc_of_token[3]).all()
    is_next = rnd == 0
    assert (doc_of_token[0][is_next] == doc_of_token[2][is_next]).all()
    assert (doc_of_token[0][~is_next] != doc_of_token[2][~is_next]).all()
    assert (b0[is_next] >= a1[is_next]).all()  # B follows A in the same document


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**63 + 7])
@pytest.mark.parametrize("corpus", ["wiki", "short-sentences", "long-sentences"])
def test_cpp_equals_reference(prepared, seed, corpus):
    if corpus == "wiki":
        ds = IndexedDataset(prepared[0])
        args = select_sentences(ds, split_documents(ds.doc_hashes, "all", 0))
        max_seq_length, short = 128, 0.1
    else:
        rng = np.random.default_rng(seed % 1000)
        args = synthetic(rng, 400, 12, 6 if corpus == "short-sentences" else 300)
        max_seq_length, short = (64, 0.3) if corpus == "short-sentences" else (128, 0.1)
    cpp = build_sample_map(*args, max_seq_length, short, 0.5, seed)
    ref = build_sample_map_ref(*args, max_seq_length, short, 0.5, seed)
    assert np.array_equal(cpp.samples, ref.samples)
    assert (cpp.docs_skipped, cpp.tail_dropped) == (ref.docs_skipped, ref.tail_dropped)
    check_invariants(cpp.samples, *args, max_seq_length)
    n = len(cpp.samples)
    assert abs(cpp.samples[:, 4].mean() - 0.5) < 4 * 0.5 / np.sqrt(n)  # NotNext share: binomial bound


def test_seed_changes_map_and_short_targets(prepared):
    ds = IndexedDataset(prepared[0])
    args = select_sentences(ds, split_documents(ds.doc_hashes, "all", 0))
    a, b = build_sample_map(*args, 128, 0.1, 0.5, 1), build_sample_map(*args, 128, 0.1, 0.5, 2)
    assert not np.array_equal(a.samples, b.samples)
    no_short = build_sample_map(*args, 128, 0.0, 0.5, 1).samples
    lengths = lambda s: (s[:, 1] - s[:, 0]) + (s[:, 3] - s[:, 2])  # noqa: E731
    assert lengths(a.samples).mean() < lengths(no_short).mean()


def test_edge_cases():
    starts, lengths, docs = np.array([0, 5, 9]), np.array([5, 4, 3]), np.array([0, 1, 3])
    m = build_sample_map(starts, lengths, docs, 5, 0.0, 0.5, 3)  # max 2 tokens: A and B one token each
    assert m.docs_skipped == 1 and ((m.samples[:, 1] - m.samples[:, 0]) == 1).all()
    with pytest.raises(ValueError, match="two documents"):
        build_sample_map(starts[:2], lengths[:2], np.array([0, 2]), 128, 0.1, 0.5, 0)
    with pytest.raises(ValueError, match="no sentences"):
        build_sample_map(starts, lengths, np.array([0, 0, 3]), 128, 0.1, 0.5, 0)
    with pytest.raises(ValueError, match="max_seq_length"):
        build_sample_map(starts, lengths, docs, 4, 0.1, 0.5, 0)


def test_cache_built_once_and_memory_mapped(prepared):
    ds = IndexedDataset(prepared[0])
    m1, path = cached_sample_map(ds, "train", 0.05, seed=9, max_seq_length=96)
    mtime = path.stat().st_mtime_ns
    m2, path2 = cached_sample_map(ds, "train", 0.05, seed=9, max_seq_length=96)
    assert path2 == path and path.stat().st_mtime_ns == mtime and isinstance(m2, np.memmap)
    assert np.array_equal(m1, m2)
    m3, path3 = cached_sample_map(ds, "train", 0.05, seed=9, max_seq_length=96, nsp_prob=0.3)
    assert path3 != path


def test_held_out_split_is_disjoint(prepared):
    ds = IndexedDataset(prepared[0])
    train, held = (split_documents(ds.doc_hashes, s, 0.1) for s in ("train", "eval"))
    assert len(np.intersect1d(train, held)) == 0 and len(train) + len(held) == ds.num_docs
    assert 0.05 < len(held) / ds.num_docs < 0.15
    held_tokens = set()
    for d in held:
        held_tokens.update(range(int(ds.sentence_starts[ds.doc_offsets[d]]),
                                 int(ds.sentence_starts[ds.doc_offsets[d + 1] - 1]
                                     + ds.sentence_lengths[ds.doc_offsets[d + 1] - 1])))
    train_map, _ = cached_sample_map(ds, "train", 0.1, seed=0, max_seq_length=128)
    starts = np.asarray(train_map)[:, [0, 2]].ravel()
    assert not held_tokens.intersection(starts.tolist())


# ---- sentence-order prediction (ALBERT's SOP) ------------------------------------------------------------------
def check_sop_invariants(samples, starts, lengths, doc_offsets, max_seq_length):
    """Both segments from one document, consecutive text: in order (label 0) the first segment ends before the second
    starts; swapped (label 1) the first segment is the later text."""
    a0, a1, b0, b1, swapped = samples.T
    assert ((a1 > a0) & (b1 > b0)).all()
    assert ((a1 - a0) + (b1 - b0) + 3 <= max_seq_length).all()
    assert set(np.unique(swapped)) <= {0, 1}
    doc_of_token = np.searchsorted(starts[doc_offsets[1:-1]], np.stack([a0, a1 - 1, b0, b1 - 1]), side="right")
    assert (doc_of_token == doc_of_token[0]).all()  # never across documents
    in_order = swapped == 0
    assert (b0[in_order] >= a1[in_order]).all() and (a0[~in_order] >= b1[~in_order]).all()


@pytest.mark.parametrize("seed", [0, 3, 2**64 - 1])
@pytest.mark.parametrize("corpus", ["wiki", "short-sentences", "long-sentences", "one-document"])
def test_sop_cpp_equals_reference(prepared, seed, corpus):
    if corpus == "wiki":
        ds = IndexedDataset(prepared[0])
        args = select_sentences(ds, split_documents(ds.doc_hashes, "all", 0))
        max_seq_length, short = 128, 0.1
    elif corpus == "one-document":
        args = (np.arange(0, 70, 7), np.full(10, 7), np.array([0, 10]))
        max_seq_length, short = 13, 0.0
    else:
        rng = np.random.default_rng(seed % 1000 + 1)
        args = synthetic(rng, 397, 11, 5 if corpus == "short-sentences" else 301)
        max_seq_length, short = (61, 0.3) if corpus == "short-sentences" else (127, 0.1)
    cpp = build_sop_map(*args, max_seq_length, short, 0.5, seed)
    ref = build_sample_map_ref(*args, max_seq_length, short, 0.5, seed, sop=True)
    assert len(cpp.samples) > 0 and np.array_equal(cpp.samples, ref.samples)
    assert (cpp.docs_skipped, cpp.tail_dropped) == (ref.docs_skipped, ref.tail_dropped)
    check_sop_invariants(cpp.samples, *args, max_seq_length)


def test_sop_swaps_half_within_binomial_bounds(prepared):
    ds = IndexedDataset(prepared[0])
    args = select_sentences(ds, split_documents(ds.doc_hashes, "all", 0))
    for seed in (0, 1, 2):
        swapped = build_sop_map(*args, 128, 0.1, 0.5, seed).samples[:, 4]
        n = len(swapped)
        assert n > 2000 and abs(swapped.mean() - 0.5) < 4 * 0.5 / np.sqrt(n)  # 4 standard errors
    skewed = build_sop_map(*args, 128, 0.1, 0.2, 0).samples[:, 4]
    assert abs(skewed.mean() - 0.2) < 4 * np.sqrt(0.2 * 0.8 / len(skewed))


def test_sop_pairs_are_adjacent_text_before_truncation():
    """Without truncation (short sentences, long max), a pair is A then B back to back: b0 == a1 in order, a0 == b1
    swapped; the samples of a document cover its sentences in order."""
    rng = np.random.default_rng(5)
    starts, lengths, docs = synthetic(rng, 50, 9, 4, one_sentence_share=0.0)
    samples = build_sop_map(starts, lengths, docs, 512, 0.0, 0.5, 11).samples
    a0, a1, b0, b1, swapped = samples.T
    assert (b0[swapped == 0] == a1[swapped == 0]).all() and (a0[swapped == 1] == b1[swapped == 1]).all()
    first, last = np.minimum(a0, b0), np.maximum(a1, b1)
    assert (first[1:] >= last[:-1]).all()  # consecutive samples never overlap


def test_sop_edge_cases():
    starts, lengths = np.array([0, 5, 9]), np.array([5, 4, 3])
    one_doc = build_sop_map(starts, lengths, np.array([0, 3]), 128, 0.0, 0.5, 0)
    assert len(one_doc.samples) == 1 and one_doc.docs_skipped == 0  # NSP refuses one document; SOP needs none other
    with pytest.raises(ValueError, match="two documents"):
        build_sample_map(starts, lengths, np.array([0, 3]), 128, 0.0, 0.5, 0)
    singles = build_sop_map(starts, lengths, np.array([0, 1, 2, 3]), 128, 0.0, 0.5, 0)
    assert len(singles.samples) == 0 and singles.docs_skipped == 3
    with pytest.raises(ValueError, match="build_sop_map: need at least one document"):
        build_sop_map(starts[:0], lengths[:0], np.array([0]), 128, 0.1, 0.5, 0)
    with pytest.raises(ValueError, match="build_sop_map: sentence 1 is empty"):
        build_sop_map(starts, np.array([5, 0, 3]), np.array([0, 3]), 128, 0.1, 0.5, 0)


def test_cache_key_separates_pairings(prepared):
    ds = IndexedDataset(prepared[0])
    nsp, p1 = cached_sample_map(ds, "train", 0.05, seed=4, max_seq_length=80)
    sop, p2 = cached_sample_map(ds, "train", 0.05, seed=4, max_seq_length=80, pairing="sop")
    assert p1 != p2 and not np.array_equal(nsp, sop)
    with pytest.raises(ValueError, match="pairing"):
        cached_sample_map(ds, "train", 0.05, pairing="mlm")
