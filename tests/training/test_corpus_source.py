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


def _source(prepared, tokenizer_dir, rank, world, micro_batch=MICRO_BATCH, **settings):
    cfg = PretrainConfig.from_flat(output_dir="unused", data_dir=str(prepared[0]), tokenizer=str(tokenizer_dir),
                                   max_seq_length=64, micro_batch=micro_batch, global_batch=micro_batch * 6, steps=1,
                                   **settings)
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
    held = list(single.held_out_batches(8)), list(single.held_out_batches(8))
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


def _held_out_rows(sources, n_samples):
    """The held-out samples that `sources` (one per rank) score, in the global order: (input_ids, mlm_labels)."""
    shares = [list(src.held_out_batches(n_samples)) for src in sources]
    batches = [shares[k % len(sources)][k // len(sources)] for k in range(sum(map(len, shares)))]
    return (np.concatenate([np.asarray(b.input_ids) for b in batches]),
            np.concatenate([np.asarray(b.mlm_labels) for b in batches]))


def test_held_out_set_is_the_same_samples_for_any_micro_batch_and_rank_count(prepared, tokenizer_dir):
    """--eval-samples N: the first N held-out samples, once each, with the same masks for any --micro-batch (the
    last batch may be short), number of ranks (batch k on rank k % world) and --masking; all of the split when N is
    larger."""
    n = 23  # prime: a short last batch for every micro batch here
    ids, labels = _held_out_rows([_source(prepared, tokenizer_dir, 0, 1)], n)
    assert ids.shape[0] == n and (labels != -100).any()
    for micro, world, masking in ((3, 1, "host"), (5, 2, "host"), (4, 3, "host"), (7, 2, "device")):
        sources = [_source(prepared, tokenizer_dir, r, world, micro, masking=masking) for r in range(world)]
        got_ids, got_labels = _held_out_rows(sources, n)
        np.testing.assert_array_equal(got_ids, ids, err_msg=f"micro {micro}, {world} ranks, {masking}")
        np.testing.assert_array_equal(got_labels, labels, err_msg=f"micro {micro}, {world} ranks, {masking}")
    split = len(_source(prepared, tokenizer_dir, 0, 1).held_out)
    assert _held_out_rows([_source(prepared, tokenizer_dir, r, 2, 5) for r in range(2)], 10 ** 6)[0].shape[0] == split


def test_eval_samples_above_the_split_says_so_once(prepared, tokenizer_dir, caplog):
    """--eval-samples above the held-out split's size: one INFO line from rank 0 naming both numbers (every
    evaluation then scores the whole split); none at or below the size, none from other ranks."""
    split = len(_source(prepared, tokenizer_dir, 0, 1, eval_samples=1).held_out)
    caplog.clear()
    with caplog.at_level("INFO", logger="bertforge"):
        _source(prepared, tokenizer_dir, 0, 1, eval_samples=split)
        _source(prepared, tokenizer_dir, 1, 2, eval_samples=split + 1)
        assert not [r for r in caplog.records if "held-out split" in r.getMessage()]
        _source(prepared, tokenizer_dir, 0, 2, eval_samples=split + 1)
    lines = [r.getMessage() for r in caplog.records if "held-out split" in r.getMessage()]
    assert len(lines) == 1 and f"--eval-samples {split + 1}" in lines[0] and f"all {split}" in lines[0], lines
