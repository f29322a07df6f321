"""Document grouping (engine/data/grouping.py): the C++ builder equals the numpy reference bit for bit, every block
is full except the last, every unit of the stream lands in exactly one block in order, and `pack_token_lists` keeps
every token of a corpus of short texts."""
import numpy as np
import pytest

from bertforge.data.grouping import group_documents, group_documents_ref, pack_token_lists


def stream_units(doc_len, separate):
    """(doc, unit) of every unit of the stream, in order: the units a grouping must cover exactly once."""
    out = []
    for d, n in enumerate(doc_len):
        out += [(d, u) for u in range(int(n) + (1 if separate and d + 1 < len(doc_len) else 0))]
    return out


def covered_units(g):
    return [(int(d), u) for d, b, e in g.pieces for u in range(int(b), int(e))]


CASES = [  # (doc lengths, block_tokens): awkward on purpose
    ([1], 1), ([1, 1, 1], 1), ([5], 126), ([126], 126), ([127], 126), ([253], 126), ([3, 4], 7), ([3, 4], 8),
    ([1] * 97, 13), ([2, 9, 1, 1, 30, 4], 5), ([1000, 1, 999], 127), (list(range(1, 60)), 61),
]


@pytest.mark.parametrize("separate", [True, False])
@pytest.mark.parametrize("doc_len, block", CASES)
def test_cpp_equals_reference_and_covers_the_stream(doc_len, block, separate):
    g, ref = group_documents(doc_len, block, separate), group_documents_ref(doc_len, block, separate)
    assert g.pieces.dtype == ref.pieces.dtype == np.int64 and g.block_offsets.dtype == np.int64
    assert np.array_equal(g.pieces, ref.pieces) and np.array_equal(g.block_offsets, ref.block_offsets)
    assert covered_units(g) == stream_units(doc_len, separate)  # nothing lost, repeated or reordered
    sizes = [int((g.pieces[lo:hi, 2] - g.pieces[lo:hi, 1]).sum())
             for lo, hi in zip(g.block_offsets[:-1], g.block_offsets[1:])]
    total = sum(doc_len) + (len(doc_len) - 1 if separate else 0)
    assert g.num_blocks == -(-total // block) and all(s == block for s in sizes[:-1]) and 1 <= sizes[-1] <= block
    assert sum(sizes) == total


def test_random_corpora_bit_identical():
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(0, 40))
        doc_len = rng.integers(1, 300, n) if rng.random() < 0.5 else rng.integers(1, 4, n)
        block, separate = int(rng.integers(1, 130)), bool(rng.integers(0, 2))
        g, ref = group_documents(doc_len, block, separate), group_documents_ref(doc_len, block, separate)
        assert np.array_equal(g.pieces, ref.pieces) and np.array_equal(g.block_offsets, ref.block_offsets)
        assert covered_units(g) == stream_units(doc_len, separate)


def test_empty_corpus_and_bad_input():
    g = group_documents(np.zeros(0, np.int64), 10)
    assert g.num_blocks == 0 and g.pieces.shape == (0, 3) and list(g.block_offsets) == [0]
    with pytest.raises(ValueError, match="document 1 is empty"):
        group_documents([3, 0, 2], 10)
    with pytest.raises(ValueError, match="block_tokens"):
        group_documents([3], 0)
    with pytest.raises(ValueError):
        group_documents_ref([3, 0], 10)


def test_separator_closes_each_document_but_the_last():
    g = group_documents([2, 3], 10, separate=True)
    assert g.pieces.tolist() == [[0, 0, 3], [1, 0, 3]]  # doc 0: 2 tokens + its separator; doc 1: 3 tokens
    assert pack_token_lists([[7, 8], [9, 10, 11]], 12, cls_id=2, sep_id=3) == [[2, 7, 8, 3, 9, 10, 11, 3]]
    assert pack_token_lists([[7, 8], [9, 10, 11]], 12, 2, 3, separate=False) == [[2, 7, 8, 9, 10, 11, 3]]


def test_120_short_texts_keep_all_their_tokens(tokenizer_dir):
    """A corpus of titles / queries (120 texts of 2-5 words) packs into full sequences holding every token, in order
    (Hugging Face's run_mlm group_texts keeps them too; dropping short texts would leave nothing to train on)."""
    from bertforge.data.tokenizer import load_tokenizer, special_ids

    words = ("river city music history football school island church station film village war army team "
             "language county mountain railway album season").split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, int(rng.integers(2, 6)))) for _ in range(120)]
    tok = load_tokenizer(tokenizer_dir)
    ids = special_ids(tok)
    lists = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
    n_tokens = sum(map(len, lists))
    assert n_tokens >= 240
    for max_seq_length in (128, 61, 8):
        seqs = pack_token_lists(lists, max_seq_length, ids.cls_id, ids.sep_id)
        assert all(len(s) == max_seq_length for s in seqs[:-1]) and 3 <= len(seqs[-1]) <= max_seq_length
        assert all(s[0] == ids.cls_id and s[-1] == ids.sep_id for s in seqs)
        body = [t for s in seqs for t in s[1:-1]]
        assert [t for t in body if t != ids.sep_id] == [t for lst in lists for t in lst]  # every token, in order
        assert body.count(ids.sep_id) == len(lists) - 1  # one separator between consecutive texts
        assert len(seqs) == -(-(n_tokens + len(lists) - 1) // (max_seq_length - 2))
    with pytest.raises(ValueError, match="max_seq_length"):
        pack_token_lists(lists, 2, ids.cls_id, ids.sep_id)
    assert pack_token_lists([[], []], 16, 2, 3) == []
