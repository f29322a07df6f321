"""Pretraining on a real prepared corpus (a slice of the Wikipedia extracts) through bertforge.data's sample map,
masking and collator: the padded, unpadded and packed layouts give the same loss sequence, a resumed run continues
it exactly, and 2 ranks (ZeRO 2) equal 1 rank with the same global batch."""
import json

import numpy as np
import pytest

from bertforge.config.pretrain import PretrainConfig
from bertforge.data.source import CorpusSource
from tests.training.conftest import run_worker

MICRO_BATCH = 4


def _source(prepared, tokenizer_dir, rank, world):
    cfg = PretrainConfig.from_flat(output_dir="unused", data_dir=str(prepared[0]), tokenizer=str(tokenizer_dir),
                                   max_seq_length=64, micro_batch=MICRO_BATCH, global_batch=8, steps=1)
    source = CorpusSource(cfg, rank, world)
    source.start()
    return source


def test_micro_batch_k_goes_to_rank_k_mod_world(prepared, tokenizer_dir):
    single = _source(prepared, tokenizer_dir, 0, 1)
    ranks = [_source(prepared, tokenizer_dir, r, 2) for r in range(2)]
    for k in range(3):
        for r in range(2):
            a, b = single.next_batch(), ranks[r].next_batch()
            assert b.input_ids.shape == a.input_ids.shape
            np.testing.assert_array_equal(a.input_ids, b.input_ids)  # same samples, same masks
            np.testing.assert_array_equal(a.mlm_labels, b.mlm_labels)
    held = list(single.eval_batches(2)), list(single.eval_batches(2))
    np.testing.assert_array_equal(held[0][1].input_ids, held[1][1].input_ids)  # fixed held-out masks


def test_dataset_prepared_with_another_tokenizer_is_refused(prepared, tmp_path):
    from bertforge.errors import DataError
    from bertforge.data.tokenizer import train_wordpiece

    corpus = tmp_path / "other.txt"
    corpus.write_text("Some other words here. And more words there.\n", encoding="utf-8")
    train_wordpiece([corpus], tmp_path / "tok", vocab_size=60, show_progress=False)
    cfg = PretrainConfig.from_flat(output_dir="unused", data_dir=str(prepared[0]), tokenizer=str(tmp_path / "tok"),
                                   steps=1)
    with pytest.raises(DataError, match="prepared with another tokenizer"):
        CorpusSource(cfg, 0, 1)


def _close(a, b, tol):
    assert len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b)) <= tol, (a, b)


def test_layouts_agree_and_resume_exactly(prepared, tokenizer_dir, tmp_path):
    run_worker("corpus", tmp_path, prepared[0], tokenizer_dir, "padded,unpadded,packed", timeout=400)
    res = json.loads((tmp_path / "corpus.json").read_text())
    padded = res["padded"]["full"]
    assert len(padded) == 6 and padded[-1] < padded[0]
    for layout in ("padded", "unpadded", "packed"):
        assert res[layout]["resumed"] == res[layout]["full"][3:], layout  # fp32 resume: identical losses
        _close(res[layout]["full"], padded, 1e-4)


def test_two_ranks_zero2_equal_one_rank_on_real_data(prepared, tokenizer_dir, tmp_path):
    run_worker("corpus", tmp_path / "one", prepared[0], tokenizer_dir, "unpadded", ZERO=2, timeout=400)
    run_worker("corpus", tmp_path / "two", prepared[0], tokenizer_dir, "unpadded", ZERO=2, ranks=2, timeout=400)
    one = json.loads((tmp_path / "one" / "corpus.json").read_text())["unpadded"]
    two = json.loads((tmp_path / "two" / "corpus.json").read_text())["unpadded"]
    _close(two["full"], one["full"], 1e-5)
    assert two["resumed"] == two["full"][3:]


def test_held_out_set_is_global(prepared, tokenizer_dir):
    """--eval-batches counts held-out micro batches over all ranks: 1, 2 and 3 ranks score the same batches (same
    samples, same masks), each once, shared out k % world; capped so that no sample is scored twice."""
    single = _source(prepared, tokenizer_dir, 0, 1)
    n = len(single.held_out)
    assert len(list(single.eval_batches(10 ** 6))) == n // MICRO_BATCH
    reference = list(single.eval_batches(7))
    for world in (2, 3):
        shares = [list(_source(prepared, tokenizer_dir, r, world).eval_batches(7)) for r in range(world)]
        assert sum(map(len, shares)) == 7
        for k, ref in enumerate(reference):
            got = shares[k % world][k // world]
            np.testing.assert_array_equal(got.input_ids, ref.input_ids)
            np.testing.assert_array_equal(got.mlm_labels, ref.mlm_labels)
    capped = [len(list(_source(prepared, tokenizer_dir, r, 2).eval_batches(10 ** 6))) for r in range(2)]
    assert sum(capped) == n // MICRO_BATCH
