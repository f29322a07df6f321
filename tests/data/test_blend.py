"""Weighted blends of prepared datasets (engine/data/blend.py): the C++ blending table equals its numpy reference,
every window of 1,000 samples holds each dataset's share within 3 samples, the stream is the same on 1 and 2 ranks
and after a 1 -> 2 rank resume, each dataset keeps its own held-out split, and a dataset prepared with another
tokenizer is refused in one line."""
import json
from pathlib import Path

import numpy as np
import pytest

from bertforge.config.pretrain import PretrainConfig
from bertforge.data.blend import BlendSampler, blending_indices, blending_indices_ref, parse_blend
from bertforge.data.sampler import remap_position
from bertforge.data.source import CorpusSource
from bertforge.errors import ConfigError, DataError


@pytest.mark.parametrize("weights", [[0.7, 0.3], [0.5, 0.3, 0.2], [1, 1, 1], [0.999, 0.001], [1.0],
                                     list(np.random.default_rng(3).uniform(0.01, 1, 7))])
def test_cpp_blending_table_equals_the_reference(weights):
    got, ref = blending_indices(weights, 3001), blending_indices_ref(weights, 3001)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
    assert got[0].dtype == np.int16 and got[1].dtype == np.int64


def test_every_window_of_1000_samples_matches_the_weights():
    w = np.array([0.6, 0.25, 0.1, 0.05])
    sampler = BlendSampler([50, 70, 13, 400], w, micro_batch=8, period=4096)  # windows cross period boundaries
    d, _, idx = sampler.samples(np.arange(20_000))
    counts = np.zeros((len(d) + 1, len(w)))
    counts[1:] = np.cumsum(np.eye(len(w))[d], axis=0)
    window = counts[1000:] - counts[:-1000]                    # (n - 999, datasets) counts of every window
    assert np.abs(window - 1000 * w).max() <= 3
    assert ((idx >= sampler.offsets[d]) & (idx < sampler.offsets[d + 1])).all()
    # within a dataset, each of its own epochs is a permutation of its samples
    first = idx[d == 2][:13 * 3].reshape(3, 13) - sampler.offsets[2]
    assert all(sorted(row) == list(range(13)) for row in first) and not (first[0] == first[1]).all()
    again = BlendSampler([50, 70, 13, 400], w, micro_batch=8, period=4096).samples(np.arange(20_000))[2]
    np.testing.assert_array_equal(again, idx)  # deterministic for (seed, weights)
    other = BlendSampler([50, 70, 13, 400], w, micro_batch=8, period=4096, seed=1).samples(np.arange(20_000))[2]
    assert not np.array_equal(other, idx)


def test_blend_stream_is_the_same_on_two_ranks_and_after_a_one_to_two_rank_resume():
    sizes, w = [31, 17], [0.7, 0.3]
    one = BlendSampler(sizes, w, micro_batch=4, world=1, seed=5)
    stream = np.concatenate([one.indices(p).indices for p in range(20)])
    two = [BlendSampler(sizes, w, micro_batch=2, rank=r, world=2, seed=5) for r in range(2)]
    np.testing.assert_array_equal(np.concatenate([two[k % 2].indices(k // 2).indices for k in range(40)]), stream)
    resumed = remap_position(8, 1, 4, 2, 4)  # 8 micro batches of 4 on 1 rank -> micro batches of 4 on 2 ranks
    two = [BlendSampler(sizes, w, micro_batch=4, rank=r, world=2, seed=5) for r in range(2)]
    tail = np.concatenate([two[r].indices(resumed + p).indices for p in range(6) for r in range(2)])
    assert resumed == 4
    np.testing.assert_array_equal(tail, stream[8 * 4:8 * 4 + 48])


def test_blend_specs_parse_and_bad_ones_are_refused(tmp_path):
    assert parse_blend("data") == parse_blend(" data ") and parse_blend("data")[0].weight == 1.0
    entries = parse_blend("0.7:a 0.3:b")
    assert [(round(e.weight, 6), e.path) for e in entries] == [(0.7, "a"), (0.3, "b")]
    assert parse_blend("3:a,1:b")[0].weight == 0.75
    spec = tmp_path / "blend.json"
    spec.write_text(json.dumps([{"path": "wiki", "weight": 2}, {"path": "/abs/books", "weight": 1}]))
    assert [(e.weight, e.path) for e in parse_blend(str(spec))] == [(2 / 3, str(tmp_path / "wiki")),
                                                                     (1 / 3, "/abs/books")]
    for bad, match in [("0.7:a b", r"'b' has no weight.*WEIGHT:DIR"), ("-1:a 1:b", "must be a positive number"),
                       ("1:a 1:a", "appears twice")]:
        with pytest.raises(ConfigError, match=match):
            parse_blend(bad)
    spec.write_text('[{"path": "a"}]')
    with pytest.raises(ConfigError, match=r"blend.json: entry 0 must have 'path' and 'weight'"):
        parse_blend(str(spec))


# ---- through the pretraining source, on two real prepared datasets ------------------------------------------------
@pytest.fixture(scope="module")
def books(wiki_slice, tokenizer_dir, tmp_path_factory):
    """A second dataset, prepared with the same tokenizer from other text (the slice's last 600 documents)."""
    from bertforge.data.prepare import prepare

    data = json.loads(wiki_slice.read_text())
    src = tmp_path_factory.mktemp("books") / "books.json"
    src.write_text(json.dumps(dict(list(data.items())[-600:])))
    out = tmp_path_factory.mktemp("books_data")
    prepare([src], tokenizer_dir, out, progress=False)
    return out


def _source(spec, tokenizer_dir, rank, world, micro_batch, tmp_path):
    cfg = PretrainConfig.from_flat(output_dir=str(tmp_path), data_dir=spec, tokenizer=str(tokenizer_dir),
                                   data_cache=str(tmp_path / "cache"), max_seq_length=64, micro_batch=micro_batch,
                                   global_batch=8, steps=1)
    source = CorpusSource(cfg, rank, world)
    source.start()
    return source


def test_a_blend_trains_on_both_datasets_by_weight_and_keeps_their_held_out_splits(prepared, books, tokenizer_dir,
                                                                                   tmp_path):
    spec = f"0.7:{prepared[0]} 0.3:{books}"
    one = _source(spec, tokenizer_dir, 0, 1, 8, tmp_path)
    n_wiki = len(one.train.datasets[0])
    ids = np.concatenate([one.sampler.indices(p).indices for p in range(125)])  # 1,000 samples
    assert abs(int((ids < n_wiki).sum()) - 700) <= 2
    two = [_source(spec, tokenizer_dir, r, 2, 4, tmp_path) for r in range(2)]
    for k in range(6):  # global micro batch k of 4 samples (rank k % 2) = half k % 2 of 1-rank micro batch k // 2
        b1, b2 = one.batch_at(k // 2), two[k % 2].batch_at(k // 2)
        rows = slice((k % 2) * 4, (k % 2 + 1) * 4)
        np.testing.assert_array_equal(two[k % 2].sampler.indices(k // 2).indices,
                                      one.sampler.indices(k // 2).indices[rows])
        np.testing.assert_array_equal(b2.input_ids, b1.input_ids[rows])  # same samples, same masks
    # random replacements follow the blend's unigram distribution: each dataset's frequencies by its weight
    counts = [ds.data.unigram_counts().astype(float) for ds in one.train.datasets]
    want = 0.7 * counts[0] / counts[0].sum() + 0.3 * counts[1] / counts[1].sum()
    want[one.train.special.as_list()] = 0
    np.testing.assert_allclose(one.replacement_probs, want / want.sum(), rtol=1e-12)
    # each dataset's held-out split is its own: the batches differ and are the same on every call
    wiki_eval, books_eval = (list(one.held_out_batches(16, dataset=str(p))) for p in (prepared[0], books))
    assert len(wiki_eval) == len(books_eval) == 2
    assert not np.array_equal(wiki_eval[0].input_ids, books_eval[0].input_ids)
    assert len(list(one.held_out_batches(16))) == 4  # both splits in turn
    np.testing.assert_array_equal(list(one.held_out_batches(16, dataset=str(books)))[1].input_ids,
                                  books_eval[1].input_ids)


def test_a_blend_with_a_dataset_of_another_tokenizer_is_refused_in_one_line(prepared, tmp_path):
    from bertforge.data.prepare import prepare
    from bertforge.data.tokenizer import train_wordpiece

    text = tmp_path / "other.txt"
    text.write_text("Some other words here. And more words there.\n\nA second document. With two sentences.\n")
    train_wordpiece([text], tmp_path / "tok", vocab_size=60, show_progress=False)
    prepare([text], tmp_path / "tok", tmp_path / "other", progress=False)
    cfg = PretrainConfig.from_flat(output_dir=str(tmp_path), data_dir=f"0.5:{prepared[0]} 0.5:{tmp_path / 'other'}",
                                   steps=1)
    with pytest.raises(DataError) as err:
        CorpusSource(cfg, 0, 1)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(tmp_path / "other" / "meta.json"))
    assert "prepared with another tokenizer" in msg and "every dataset of a blend" in msg


def test_pretraining_on_a_blend_reports_each_dataset_held_out(prepared, books, tokenizer_dir, tmp_path):
    """`bertforge pretrain --data 0.7:A 0.3:B`: the held-out evaluation scores both held-out splits together and
    each alone (keys '<folder>/mlm_acc', ...), in metrics.jsonl and in the printed line."""
    import subprocess
    import sys

    script = (
        "import bertforge, sys\n"
        "bertforge.pretrain(data=sys.argv[1], tokenizer=sys.argv[2], output_dir=sys.argv[3], preset='tiny',\n"
        "    model={'hidden_size': 32, 'num_attention_heads': 2, 'intermediate_size': 64, 'num_hidden_layers': 1},\n"
        "    max_seq_length=64, micro_batch=4, global_batch=4, steps=2, eval_samples=8, progress=False,\n"
        "    export_hf=False)\n")
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-c", script, f"0.7:{prepared[0]} 0.3:{books}", str(tokenizer_dir),
                          str(out)], capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    evals = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["split"] == "eval"]
    last = evals[-1]
    for name in (Path(prepared[0]).name, Path(books).name):
        assert 0 <= last[f"{name}/mlm_acc"] <= 1 and last[f"{name}/masked_tokens"] > 0, last
        assert f"; {name}: MLM acc" in res.stdout
    assert last["masked_tokens"] == sum(last[f"{Path(p).name}/masked_tokens"] for p in (prepared[0], books))
