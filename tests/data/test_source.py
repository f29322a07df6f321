"""The one batch path of pretraining: the even distributed micro-batch order (engine/data/sampler.py) and the
prepared dataset's source (engine/data/source.py) with its typed, two-layout `Batch` (engine/data/batch.py)."""
import numpy as np
import pytest
import torch

from bertforge.config.pretrain import PretrainConfig
from bertforge.data.sampler import MicroBatchSampler
from bertforge.data.source import CorpusSource


def corpus_source(data_dir, tokenizer_dir, rank=0, world=1, **flat):
    """A started CorpusSource over a prepared dataset (flat PretrainConfig fields as keywords)."""
    settings = dict(data_dir=str(data_dir), tokenizer=str(tokenizer_dir), eval_fraction=0.1, micro_batch=16,
                    global_batch=16 * world, max_seq_length=64, seed=2)
    settings.update(flat)
    source = CorpusSource(PretrainConfig.from_flat(settings), rank, world)
    source.start()
    return source


@pytest.mark.parametrize("n, micro, world", [(10, 1, 3), (7, 2, 4), (12, 3, 2), (5, 2, 1), (3, 5, 2)])
def test_every_rank_gets_one_micro_batch_per_round_and_an_epoch_covers_all(n, micro, world):
    samplers = [MicroBatchSampler(n, micro, r, world, seed=1) for r in range(world)]
    rounds = -(-n // (micro * world))
    seen = [mb for p in range(rounds) for s in samplers for mb in [s.indices(p)]]
    assert all(len(mb.indices) == micro for mb in seen)  # nobody runs short: no rank waits at an epoch's end
    assert [mb.global_index for mb in seen] == list(range(rounds * world))  # k = position * world + rank
    first_epoch = np.concatenate([mb.indices for mb in seen])[:n]
    assert sorted(first_epoch.tolist()) == list(range(n))  # each sample once in the first N of the order


def test_order_is_seeded_per_epoch_and_a_pure_function_of_the_position():
    s = MicroBatchSampler(50, 5, 1, 2, seed=3)
    assert not np.array_equal(s.order(0), s.order(1))
    again = MicroBatchSampler(50, 5, 1, 2, seed=3)
    for p in (7, 0, 3, 7):  # any order of calls: the same micro batch for the same position
        assert np.array_equal(s.indices(p).indices, again.indices(p).indices)
    assert s.indices(5).epoch == 1  # position 5 of rank 1: global micro batch 11, samples 55..59 -> epoch 1
    with pytest.raises(ValueError, match="outside a world"):
        MicroBatchSampler(50, 5, 2, 2)


def test_batches_padded_and_unpadded_agree(prepared, tokenizer_dir):
    b = corpus_source(prepared[0], tokenizer_dir).next_batch()
    B, S = b.input_ids.shape
    assert (B, S) == (16, 64) and b.cu_seqlens.dtype == torch.int32 and b.cu_seqlens.shape == (17,)
    mask = b.attention_mask.bool()
    assert torch.equal(b.input_ids_unpad, b.input_ids[mask])
    assert torch.equal(b.token_type_ids_unpad, b.token_type_ids[mask])
    assert b.max_seqlen == int(mask.sum(1).max())
    assert torch.equal(b.position_ids_unpad, torch.nonzero(mask)[:, 1])
    flat, unpad = b.input_ids.reshape(-1), b.input_ids_unpad
    assert torch.equal(b.labels.reshape(-1)[b.masked_positions], b.mlm_labels)
    assert torch.equal(flat[b.masked_positions], unpad[b.masked_positions_unpad])
    assert (unpad[b.cls_positions_unpad] == 2).all()


def test_resume_gives_same_batches(prepared, tokenizer_dir):
    kw = dict(micro_batch=8, seed=4)
    source = corpus_source(prepared[0], tokenizer_dir, 1, 2, **kw)
    for _ in range(3):
        source.next_batch()
    state = source.state_dict()
    rest = source.next_batch()
    again = corpus_source(prepared[0], tokenizer_dir, 1, 2, **kw)
    again.load_state_dict(state)
    resumed = again.next_batch()
    for k in ("input_ids", "labels", "next_sentence_label"):
        assert torch.equal(getattr(rest, k), getattr(resumed, k))
    assert state == {"position": 3}


def test_dataset_refuses_other_tokenizer(prepared, tmp_path):
    from bertforge.data.tokenizer import train_wordpiece
    from bertforge.errors import DataError

    train_wordpiece(["other words entirely."] * 10, tmp_path / "t", vocab_size=60, show_progress=False)
    with pytest.raises(DataError, match="prepared with another tokenizer"):
        corpus_source(prepared[0], tmp_path / "t")
