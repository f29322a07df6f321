"""MLM-only samples (engine/data/full_sentences.py) on a prepared slice of the Wikipedia extracts: sequences are full
except the corpus tail, every token of a split appears exactly once per epoch and in corpus order, documents are
joined with one [SEP], and the batches go through the same collator as NSP pairs."""
import numpy as np
import pytest

from bertforge.data.full_sentences import NO_LABEL, FullSentenceDataset, document_ranges
from bertforge.data.pretraining import PretrainingCollator
from bertforge.data.sample_map import split_documents
from bertforge.data.sampler import MicroBatchSampler


def split_tokens(ds: FullSentenceDataset) -> list[np.ndarray]:
    return [ds.data.gather(np.arange(s, s + n)) for s, n in zip(ds.doc_start, ds.doc_len)]


@pytest.mark.parametrize("max_seq_length", [128, 61, 3])
def test_full_except_tail_and_every_token_once_in_order(prepared, tokenizer_dir, max_seq_length):
    ds = FullSentenceDataset(prepared[0], max_seq_length, split="train", eval_fraction=0.1, tokenizer=tokenizer_dir)
    b = ds.__getitems__(np.arange(len(ds)))
    assert (b.lengths[:-1] == max_seq_length).all() and 3 <= b.lengths[-1] <= max_seq_length
    assert (b.input_ids[:, 0] == ds.special.cls_id).all()
    assert (b.input_ids[np.arange(len(ds)), b.lengths - 1] == ds.special.sep_id).all()
    docs = split_tokens(ds)
    text = b.input_ids[~b.special_mask]
    assert np.array_equal(text, np.concatenate(docs))  # nothing lost, repeated or reordered
    body = np.concatenate([row[1:n - 1] for row, n in zip(b.input_ids, b.lengths)])
    assert (body == ds.special.sep_id).sum() == len(docs) - 1  # one separator between consecutive documents
    pads = np.arange(b.input_ids.shape[1])[None, :] >= b.lengths[:, None]
    assert (b.input_ids[pads] == ds.special.pad_id).all() and b.special_mask[pads].all()
    assert (b.token_type_ids == 0).all() and (b.nsp_labels == NO_LABEL).all()


def test_one_epoch_of_the_sampler_sees_each_token_once(prepared, tokenizer_dir):
    ds = FullSentenceDataset(prepared[0], 64, split="train", eval_fraction=0.1, tokenizer=tokenizer_dir)
    micro, world = 7, 2
    per_rank = [MicroBatchSampler(len(ds), micro, rank, world, seed=3) for rank in range(world)]
    seen, k = [], 0
    while len(seen) < len(ds):  # global micro batch k is on rank k % world
        seen.extend(per_rank[k % world].indices(k // world).indices.tolist())
        k += 1
    epoch = seen[:len(ds)]
    assert sorted(epoch) == list(range(len(ds)))
    b = ds.__getitems__(np.sort(epoch))
    counts = np.bincount(b.input_ids[~b.special_mask], minlength=ds.data.vocab_size)
    assert np.array_equal(counts, np.bincount(np.concatenate(split_tokens(ds)), minlength=ds.data.vocab_size))


def test_splits_are_disjoint_and_cover_the_documents(prepared, tokenizer_dir):
    kw = dict(max_seq_length=128, eval_fraction=0.1, tokenizer=tokenizer_dir)
    train, held = (FullSentenceDataset(prepared[0], split=s, **kw) for s in ("train", "eval"))
    assert len(np.intersect1d(train.doc_start, held.doc_start)) == 0
    assert len(train.doc_start) + len(held.doc_start) == train.data.num_docs
    start, length = document_ranges(train.data, split_documents(train.data.doc_hashes, "eval", 0.1))
    assert np.array_equal(start, held.doc_start) and np.array_equal(length, held.doc_len)


def test_batches_in_any_order_and_width(prepared, tokenizer_dir):
    ds = FullSentenceDataset(prepared[0], 96, split="all", tokenizer=tokenizer_dir, pad_to_max=False)
    idx = np.array([len(ds) - 1, 5, 0, 5])
    b = ds.__getitems__(idx)
    assert b.input_ids.shape == (4, 96) and list(b.sample_ids) == idx.tolist()  # the tail row is shorter
    one = [ds[int(i)]["input_ids"] for i in idx]
    for row, n, ref in zip(b.input_ids, b.lengths, one):
        assert np.array_equal(row[:n], ref)
    tail_only = ds.__getitems__([len(ds) - 1])
    assert tail_only.input_ids.shape[1] == tail_only.lengths[0] < 96
    with pytest.raises(IndexError):
        ds.__getitems__([len(ds)])


def test_collated_like_pairs(prepared, tokenizer_dir):
    ds = FullSentenceDataset(prepared[0], 64, split="train", eval_fraction=0.1, tokenizer=tokenizer_dir)
    collate = PretrainingCollator(ds.masker(0.3), ds.continuation, whole_word=True, pad_id=ds.special.pad_id)
    raw = ds.__getitems__(np.arange(16))
    batch = collate(raw, epoch=2)
    assert batch.num_tokens == 16 * 64 and int(batch.cu_seqlens[-1]) == 16 * 64
    n_text = (~raw.special_mask).sum()
    assert abs(len(batch.mlm_labels) - 0.3 * n_text) < 0.05 * n_text  # the 30% recipe: ~30% of the text tokens
    special_positions = np.flatnonzero(raw.special_mask.reshape(-1))
    assert not np.isin(batch.masked_positions.numpy(), special_positions).any()  # separators are never masked


def test_empty_split_is_refused(prepared, tokenizer_dir):
    from bertforge.errors import DataError

    with pytest.raises(DataError, match="held-out split has no documents: raise --eval-fraction"):
        FullSentenceDataset(prepared[0], 128, split="eval", eval_fraction=1e-9, tokenizer=tokenizer_dir)
