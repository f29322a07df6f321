import numpy as np
import pytest
import torch

from engine.data.loader import DistributedEvenSampler, build_pretraining_loader


@pytest.mark.parametrize("n, world", [(10, 3), (7, 4), (12, 2), (5, 1)])
def test_even_split_over_ranks(n, world):
    per_rank = [list(DistributedEvenSampler(n, r, world, seed=1)) for r in range(world)]
    assert len({len(p) for p in per_rank}) == 1 and len(per_rank[0]) == -(-n // world)
    assert set().union(*map(set, per_rank)) == set(range(n))
    dropped = [list(DistributedEvenSampler(n, r, world, seed=1, drop_last=True)) for r in range(world)]
    assert len({len(p) for p in dropped}) == 1 and len(set().union(*map(set, dropped))) == n // world * world


def test_epochs_shuffle_and_resume_anywhere():
    s = DistributedEvenSampler(50, 1, 2, seed=3)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert e0 != e1 and sorted(e0) != [] and list(DistributedEvenSampler(50, 1, 2, seed=3)) == e0
    s.set_epoch(1)
    it = iter(s)
    s.advance(9)
    state = s.state_dict()
    resumed = DistributedEvenSampler(50, 1, 2, seed=3)
    resumed.load_state_dict(state)
    assert list(resumed) == e1[9:] and len(resumed) == 16
    with pytest.raises(ValueError, match="world_size"):
        DistributedEvenSampler(50, 0, 3, seed=3).load_state_dict(state)
    del it


def test_batches_padded_and_unpadded_agree(prepared, tokenizer_dir):
    loader = build_pretraining_loader(prepared[0], 16, 64, seed=2, tokenizer=tokenizer_dir, eval_fraction=0.1)
    b = next(iter(loader))
    B, S = b["input_ids"].shape
    assert (B, S) == (16, 64) and b["cu_seqlens"].dtype == torch.int32 and b["cu_seqlens"].shape == (17,)
    mask = b["attention_mask"].bool()
    assert torch.equal(b["input_ids_unpad"], b["input_ids"][mask])
    assert torch.equal(b["token_type_ids_unpad"], b["token_type_ids"][mask])
    assert b["max_seqlen"] == int(mask.sum(1).max())
    assert torch.equal(b["position_ids_unpad"], torch.nonzero(mask)[:, 1])
    flat, unpad = b["input_ids"].reshape(-1), b["input_ids_unpad"]
    assert torch.equal(b["labels"].reshape(-1)[b["masked_positions"]], b["mlm_labels"])
    assert torch.equal(flat[b["masked_positions"]], unpad[b["masked_positions_unpad"]])
    assert (unpad[b["cls_positions_unpad"]] == 2).all()


def test_loader_resume_gives_same_batches(prepared, tokenizer_dir):
    kw = dict(batch_size=8, max_seq_len=64, seed=4, tokenizer=tokenizer_dir, rank=1, world_size=2)
    loader = build_pretraining_loader(prepared[0], **kw)
    loader.set_epoch(2)
    it = iter(loader)
    first = [next(it) for _ in range(3)]
    state = loader.state_dict()
    rest = next(it)
    again = build_pretraining_loader(prepared[0], **kw)
    again.load_state_dict(state)
    resumed = next(iter(again))
    for k in ("input_ids", "labels", "next_sentence_label"):
        assert torch.equal(rest[k], resumed[k])
    assert state["consumed"] == 24 and state["epoch"] == 2
    del first


def test_workers_match_single_process(prepared, tokenizer_dir):
    kw = dict(batch_size=32, max_seq_len=64, seed=5, tokenizer=tokenizer_dir, whole_word=True)
    a = [b["input_ids"] for _, b in zip(range(3), build_pretraining_loader(prepared[0], **kw))]
    b = [b["input_ids"] for _, b in zip(range(3), build_pretraining_loader(prepared[0], num_workers=2, **kw))]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_dataset_refuses_other_tokenizer(prepared, tmp_path):
    from engine.data.errors import DataError
    from engine.data.tokenizer import train_wordpiece

    train_wordpiece(["other words entirely."] * 10, tmp_path / "t", vocab_size=60, show_progress=False)
    with pytest.raises(DataError, match="prepared with another tokenizer"):
        build_pretraining_loader(prepared[0], 8, tokenizer=tmp_path / "t")
