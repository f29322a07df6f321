"""The batches' per-sample dropout identities (engine/data/source.py `sample_dropout_ids`, Batch.dropout_ids and
Batch.forward_inputs): a pure function of (run seed, the sample's own epoch, sample index), carried by training batches
only, the same on any rank count, and one per cu_seqlens segment of a packed batch."""
import numpy as np
import pytest
import torch

from bertforge.data.batch import PAD_DROPOUT_ID, collate
from bertforge.data.sampler import MicroBatchSampler
from bertforge.data.source import sample_dropout_ids
from bertforge.data.splitmix import derive_seed, derive_seeds
from bertforge.data.synthetic import SyntheticSource
from tests.data.test_source import corpus_source


def test_ids_are_62_bit_and_change_with_seed_epoch_and_sample():
    idx = np.arange(1000)
    a = sample_dropout_ids(3, 0, idx)
    assert a.dtype == np.int64 and (a >= 0).all() and (a < 2**62).all()
    assert len(set(a.tolist())) == 1000
    assert np.array_equal(a, sample_dropout_ids(3, np.zeros(1000, dtype=np.int64), idx))
    for other in (sample_dropout_ids(3, 1, idx), sample_dropout_ids(4, 0, idx)):  # next epoch, another run seed
        assert not np.isin(other, a).any()
    assert derive_seeds(5, np.array([1, 2]), 7).tolist() == [derive_seed(5, 1, 7), derive_seed(5, 2, 7)]


def test_sampler_gives_each_sample_its_own_epoch_where_a_batch_wraps():
    s = MicroBatchSampler(10, 4, 0, 1, seed=1)
    mb = s.indices(2)  # samples 8..11 of the global order: two of epoch 0, two of epoch 1
    assert mb.epoch == 0 and mb.epochs.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("pack", [False, True])
def test_synthetic_ids_follow_the_global_sample_whatever_the_rank_count(pack):
    one = SyntheticSource(300, 32, 4, rank=0, world=1, seed=2, pack=pack)
    two = [SyntheticSource(300, 32, 4, rank=r, world=2, seed=2, pack=pack) for r in range(2)]
    ids_one = torch.cat([one.batch_at(p).dropout_ids for p in range(4)])
    ids_two = torch.cat([two[k % 2].batch_at(k // 2).dropout_ids for k in range(4)])
    assert torch.equal(ids_one, ids_two) and ids_one.unique().numel() == 16
    assert all(b.dropout_ids is None for b in one.held_out_batches(8))


def test_packed_batches_give_one_id_per_segment():
    """Samples keep their ids wherever they are packed; row tails (padding, possibly empty) get PAD_DROPOUT_ID."""
    lengths = np.array([10, 6, 4, 16, 3])  # rows of 16: [16], [10, 6], [4, 3, tail 9]
    S = 16
    ids = np.zeros((5, S), dtype=np.int64)
    for b, n in enumerate(lengths):
        ids[b, :n] = 100 + b
    batch = collate(ids, np.zeros_like(ids), lengths, np.zeros(5, dtype=np.int64), labels=np.full_like(ids, -100),
                    pack=True)
    batch.dropout_ids = torch.tensor([50, 51, 52, 53, 54])
    seg = batch.forward_inputs(unpadded=True)["dropout_ids"]
    cu = batch.cu_seqlens.long()
    assert seg.shape == (cu.numel() - 1,)
    for s in range(seg.numel()):
        tokens = batch.input_ids_unpad[cu[s]:cu[s + 1]]
        if tokens.numel() and int(tokens[0]) >= 100:  # a sample's segment: its own id
            assert int(seg[s]) == 50 + int(tokens[0]) - 100
        else:
            assert int(seg[s]) == PAD_DROPOUT_ID
    assert batch.forward_inputs(unpadded=True)["dropout_ids"].dtype == torch.int64


def test_corpus_training_batches_carry_ids_held_out_none(prepared, tokenizer_dir):
    source = corpus_source(prepared[0], tokenizer_dir, micro_batch=8, seed=4)
    for position in (0, 3):
        mb = source.sampler.indices(position)
        batch = source.batch_at(position)
        assert torch.equal(batch.dropout_ids, torch.from_numpy(sample_dropout_ids(4, mb.epochs, mb.indices)))
        assert torch.equal(batch.forward_inputs(unpadded=False)["dropout_ids"], batch.dropout_ids)
    assert all(b.dropout_ids is None and "dropout_ids" not in b.forward_inputs(False)
               for b in source.held_out_batches(16))
    two = [corpus_source(prepared[0], tokenizer_dir, rank=r, world=2, micro_batch=8, seed=4) for r in range(2)]
    assert torch.equal(two[1].batch_at(1).dropout_ids, source.batch_at(3).dropout_ids)  # global micro batch 3
