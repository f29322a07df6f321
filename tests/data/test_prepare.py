import json
import os
import re

import numpy as np
import pytest

from engine.errors import DataError
from engine.data.indexed import IndexedDataset
from engine.data.prepare import prepare
from engine.data.readers import read_documents
from engine.data.sentences import split_sentences
from engine.data.tokenizer import load_tokenizer, tokenizer_hash, train_wordpiece


def test_prepared_matches_direct_tokenization(prepared, wiki_slice, tokenizer_dir):
    out, stats = prepared
    ds = IndexedDataset(out)
    tok = load_tokenizer(tokenizer_dir)
    assert ds.tokenizer_hash == tokenizer_hash(tok) and ds.num_docs == stats.documents == 2500
    assert len(ds.meta["shards"]) == 4 and ds.num_tokens == stats.tokens
    docs = list(read_documents([wiki_slice]))
    for d in (0, 701, 2499):  # first doc of shards 0 and 1, the last doc
        want = [tok.encode(s, add_special_tokens=False).ids for s in split_sentences(docs[d].text)]
        assert [s.tolist() for s in ds.document(d)] == want
    counts = ds.unigram_counts()
    assert counts.sum() == ds.num_tokens and counts[:5].sum() == 0
    assert not list(out.glob(".*tmp*"))


def test_rerun_skips_finished_shards_and_redoes_missing(prepared, wiki_slice, tokenizer_dir, tmp_path):
    out, _ = prepared
    work = tmp_path / "ds"
    work.mkdir()
    for f in out.iterdir():
        if f.is_file():
            (work / f.name).write_bytes(f.read_bytes())
    (work / "shard_00002.idx").unlink()           # an interrupted run: shard 2 never finished
    (work / ".shard_00002.bin.tmp-123").write_bytes(b"partial")
    stats = prepare([wiki_slice], tokenizer_dir, work, docs_per_shard=700, progress=False)
    assert (stats.shards_skipped, stats.shards_written) == (3, 1)
    assert (work / "shard_00002.bin").read_bytes() == (out / "shard_00002.bin").read_bytes()
    assert not list(work.glob(".*tmp*"))
    assert json.loads((work / "meta.json").read_text())["n_tokens"] == stats.tokens


def test_parallel_workers_give_identical_shards(wiki_slice, tokenizer_dir, prepared, tmp_path):
    small = tmp_path / "small.json"
    data = json.loads(wiki_slice.read_text())
    small.write_text(json.dumps(dict(list(data.items())[:800]), indent=2))
    a = prepare([small], tokenizer_dir, tmp_path / "a", docs_per_shard=300, progress=False)
    b = prepare([small], tokenizer_dir, tmp_path / "b", docs_per_shard=300, workers=2, progress=False)
    assert a.tokens == b.tokens
    for name in ("shard_00000.bin", "shard_00002.idx"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_other_tokenizer_is_refused(prepared, wiki_slice, tmp_path):
    out, _ = prepared
    other = train_wordpiece(["completely different words here."] * 20, tmp_path / "tok2", vocab_size=100,
                            show_progress=False)
    with pytest.raises(DataError, match="prepared with another tokenizer"):
        prepare([wiki_slice], tmp_path / "tok2", out, progress=False)
    with pytest.raises(DataError, match=r"meta.json: dataset was prepared with another tokenizer"):
        IndexedDataset(out, tokenizer_hash(other))


def test_one_sentence_docs_counted_and_long_sentences(tokenizer_dir, tmp_path):
    src = tmp_path / "c.txt"
    long = " ".join(["word"] * 80) + "."
    src.write_text(f"Just one sentence here.\n\nTwo here. And another.\n\nShort start. {long}\n")
    stats = prepare([src], tokenizer_dir, tmp_path / "lenient", max_seq_length=32, progress=False)
    assert stats.single_sentence_documents == 1 and stats.long_sentences_split == 1
    assert re.match(rf"{src}:5: sentence of \d+ tokens split", stats.warnings[0])
    ds = IndexedDataset(tmp_path / "lenient")
    assert ds.sentence_lengths.max() <= 29
    with pytest.raises(DataError, match=rf"^{src}:5: sentence of \d+ tokens is longer than max length"):
        prepare([src], tokenizer_dir, tmp_path / "strict", max_seq_length=32, strict=True, workers=2, progress=False)
    assert not (tmp_path / "strict").exists()  # nothing half-written


def test_bad_input_leaves_nothing(tokenizer_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine."}\nnot json\n')
    with pytest.raises(DataError, match=rf"^{bad}:2: not valid JSON"):
        prepare([bad], tokenizer_dir, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "e.txt"
    empty.write_text("")
    with pytest.raises(DataError, match=rf"^{empty}:1: empty file"):
        prepare([empty], tokenizer_dir, tmp_path / "out", progress=False)


def test_token_dtype_is_compact(prepared):
    ds = IndexedDataset(prepared[0])
    assert ds.shards[0].tokens.dtype == np.uint16 and isinstance(ds.shards[0].tokens, np.ndarray)
    assert os.path.getsize(prepared[0] / "shard_00000.bin") == 2 * len(ds.shards[0].tokens)
