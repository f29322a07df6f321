"""Sequence packing: first-fit decreasing invariants, the packed layout, packed vs unpacked collation of the same
real batch, and the model giving the same losses, NSP logits and gradients on both."""
import numpy as np
import pytest
import torch

from bertforge.config import tiny
from bertforge.data.packing import first_fit_decreasing, pack
from bertforge.data.tokenizer import load_tokenizer, special_ids
from bertforge.heads import BertForPreTraining, BertForSequenceClassification


def test_first_fit_decreasing_known_instance():
    row, offset, fill = first_fit_decreasing(np.array([5, 3, 4, 2, 6]), 10)
    # placed as 6 -> r0, 5 -> r1, 4 -> r0, 3 -> r1, 2 -> r1
    assert row.tolist() == [1, 1, 0, 1, 0] and offset.tolist() == [0, 5, 6, 8, 0] and fill.tolist() == [10, 10]
    with pytest.raises(ValueError, match=r"\[1, 10\]"):
        first_fit_decreasing(np.array([3, 11]), 10)


@pytest.mark.parametrize("B, S, seed", [(1, 7, 0), (37, 61, 1), (130, 128, 2), (97, 13, 3)])
def test_pack_layout(B, S, seed):
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.geometric(3.0 / S, B), S)
    lengths[rng.integers(B)] = S  # a full row: its tail segment has length 0
    p = pack(lengths, S)
    R = p.rows
    assert int(np.ceil(lengths.sum() / S)) <= R <= B
    ends = p.starts + lengths
    assert ((p.starts // S) == ((ends - 1) // S)).all()  # no sample crosses a row
    owner = np.full(R * S, -1)
    owner[p.token_index] = np.repeat(np.arange(B), lengths)
    assert len(np.unique(p.token_index)) == lengths.sum()  # every token exactly once
    assert np.array_equal(p.token_index[np.concatenate([[0], np.cumsum(lengths)[:-1]])], p.starts)
    for i in range(B):
        assert np.array_equal(np.flatnonzero(owner == i), np.arange(p.starts[i], ends[i]))
    # cu_seqlens: B samples and R row tails, in grid order; tails are exactly the unowned tokens
    cu = p.cu_seqlens
    assert cu.dtype == np.int32 and cu.shape == (B + R + 1,) and cu[0] == 0 and cu[-1] == R * S
    assert (np.diff(cu) >= 0).all() and (np.diff(cu) == 0).any()
    segments = set(zip(cu[:-1].tolist(), cu[1:].tolist()))
    assert all((int(a), int(b)) in segments for a, b in zip(p.starts, ends))
    assert all(a // S == (b - 1) // S for a, b in segments if b > a)  # no segment crosses a row
    tails = [(a, b) for a, b in segments if a == b or owner[a] == -1]
    assert len(tails) == R and all((owner[a:b] == -1).all() for a, b in tails)
    seg_of = np.repeat(np.arange(B + R), np.diff(cu))
    assert np.array_equal(p.position_ids, np.arange(R * S) - cu[seg_of])
    assert (p.position_ids[p.starts] == 0).all()


def test_pack_fixed_rows():
    lengths = np.array([9, 4, 4, 1])  # FFD: row 0 = 9 + 1 (full), row 1 = 4 + 4
    p = pack(lengths, 10, num_rows=4)
    assert p.rows == 4 and p.cu_seqlens.shape == (4 + 4 + 1,) and p.position_ids.shape == (40,)
    assert np.diff(p.cu_seqlens).tolist() == [9, 1, 0, 4, 4, 2, 10, 10]  # full row's empty tail; two empty rows
    assert p.starts.tolist() == [0, 10, 14, 9]
    with pytest.raises(ValueError, match="more than the 1 allowed"):
        pack(lengths, 10, num_rows=1)


def first_batch(prepared, tokenizer_dir, batch_size, S, whole_word=False, pack=False, pad_rows_to=None):
    """The first micro batch of the dataset's train split (seed 7), built by the dataset and collator."""
    from bertforge.data.pretraining import PretrainingCollator, PretrainingDataset
    from bertforge.data.sampler import MicroBatchSampler

    ds = PretrainingDataset(prepared[0], S, seed=7, split="train", eval_fraction=0.1, tokenizer=tokenizer_dir)
    collate = PretrainingCollator(ds.masker(), ds.continuation, whole_word, pack, pad_rows_to, ds.special.pad_id)
    mb = MicroBatchSampler(len(ds), batch_size, seed=7).indices(0)
    return collate(ds.__getitems__(mb.indices), epoch=mb.epoch)


def packed_and_unpacked(prepared, tokenizer_dir, batch_size, S, pad_rows_to=None, whole_word=False):
    """The first batch, unpacked and packed."""
    plain = first_batch(prepared, tokenizer_dir, batch_size, S, whole_word)
    packed = first_batch(prepared, tokenizer_dir, batch_size, S, whole_word, pack=True, pad_rows_to=pad_rows_to)
    return plain, packed


@pytest.mark.parametrize("whole_word", [False, True])
def test_collated_packing_keeps_samples_and_masks(prepared, tokenizer_dir, whole_word):
    B, S = 48, 128
    plain, b = packed_and_unpacked(prepared, tokenizer_dir, B, S, whole_word=whole_word)
    ids = special_ids(load_tokenizer(tokenizer_dir))
    lengths = plain.attention_mask.sum(1)
    R = b.input_ids.shape[0]
    assert b.packed and not plain.packed and b.input_ids.shape == (R, S) and R < B
    assert b.input_ids_unpad.shape == (R * S,) and b.cu_seqlens.shape == (B + R + 1,)
    assert b.max_seqlen == S and b.attention_mask is None
    starts = b.cls_positions_unpad
    assert torch.equal(starts // S, (starts + lengths - 1) // S)  # no sample split across rows
    token_index = torch.repeat_interleave(starts - plain.cu_seqlens[:-1].long(), lengths) + torch.arange(
        int(lengths.sum()))
    assert token_index.unique().numel() == token_index.numel()
    for key in ("input_ids_unpad", "token_type_ids_unpad", "position_ids_unpad"):
        assert torch.equal(getattr(b, key)[token_index], getattr(plain, key)), key
    rest = torch.ones(R * S, dtype=torch.bool)
    rest[token_index] = False
    assert (b.input_ids_unpad[rest] == ids.pad_id).all() and (b.labels.flatten()[rest] == -100).all()
    assert torch.equal(b.labels.flatten()[token_index], plain.labels[plain.attention_mask.bool()])
    assert torch.equal(b.mlm_labels, plain.mlm_labels)
    assert torch.equal(b.input_ids_unpad[b.masked_positions_unpad],
                       plain.input_ids_unpad[plain.masked_positions_unpad])
    assert torch.equal(b.masked_positions, b.masked_positions_unpad)
    assert (b.input_ids_unpad[starts] == ids.cls_id).all()
    assert torch.equal(b.next_sentence_label, plain.next_sentence_label)
    padded_segments = (b.cu_seqlens[1:] - b.cu_seqlens[:-1]).long()
    assert padded_segments.sum() == R * S and int(padded_segments.max()) <= S


def test_fixed_rows_and_too_few(prepared, tokenizer_dir):
    _, b = packed_and_unpacked(prepared, tokenizer_dir, 24, 128, pad_rows_to=24)
    assert b.input_ids.shape == (24, 128) and b.cu_seqlens.shape == (24 + 24 + 1,)
    with pytest.raises(ValueError, match="raise pad_rows_to"):
        packed_and_unpacked(prepared, tokenizer_dir, 24, 128, pad_rows_to=2)
    with pytest.raises(ValueError, match="needs pack=True"):
        first_batch(prepared, tokenizer_dir, 8, 64, pad_rows_to=4)


def test_model_same_on_packed_and_unpacked(prepared, tokenizer_dir):
    plain, b = packed_and_unpacked(prepared, tokenizer_dir, 16, 128)
    R = b.input_ids.shape[0]
    assert R < 16 and (b.cu_seqlens.diff() == 0).any()  # samples share rows; a full row's tail is empty
    _, extra = packed_and_unpacked(prepared, tokenizer_dir, 16, 128, pad_rows_to=R + 2)  # two all-[PAD] rows
    vocab = load_tokenizer(tokenizer_dir).get_vocab_size()
    config = tiny(vocab_size=vocab, hidden_size=64, num_attention_heads=2, intermediate_size=128,
                  max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = BertForPreTraining(config).eval()

    def run(batch):
        model.zero_grad()
        out = model(batch.input_ids_unpad, batch.token_type_ids_unpad,
                    position_ids=batch.position_ids_unpad, cu_seqlens=batch.cu_seqlens,
                    max_seqlen=batch.max_seqlen, masked_positions=batch.masked_positions_unpad,
                    mlm_labels=batch.mlm_labels, next_sentence_label=batch.next_sentence_label,
                    cls_positions=batch.cls_positions_unpad if batch.packed else None)
        out.loss.backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref, ref_grads = run(plain)
    for batch in (b, extra):
        out, grads = run(batch)
        assert torch.allclose(out.mlm_loss, ref.mlm_loss, rtol=0, atol=1e-5)
        assert torch.allclose(out.nsp_logits, ref.nsp_logits, rtol=0, atol=1e-5)
        assert torch.equal(out.mlm_predictions, ref.mlm_predictions)
        assert grads.keys() == ref_grads.keys()
        for name, g in grads.items():  # fp32 sums in another order: measured max abs error 1.3e-7
            assert torch.allclose(g, ref_grads[name], rtol=1e-4, atol=1e-6), name
    classifier = BertForSequenceClassification(config, 3).eval()
    with torch.no_grad():
        logits = [classifier(x.input_ids_unpad, x.token_type_ids_unpad, position_ids=x.position_ids_unpad,
                             cu_seqlens=x.cu_seqlens, max_seqlen=x.max_seqlen,
                             cls_positions=x.cls_positions_unpad if x.packed else None).logits
                  for x in (plain, b)]
    assert logits[1].shape == (16, 3) and torch.allclose(logits[1], logits[0], rtol=0, atol=1e-5)
