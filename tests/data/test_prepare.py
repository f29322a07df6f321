import json
import re

import numpy as np
import pytest

from bertforge.config.prepare import PrepareConfig, parse_size
from bertforge.errors import ConfigError, DataError
from bertforge.data.indexed import IndexedDataset
from bertforge.data.prepare import prepare
from bertforge.data.readers import read_documents
from bertforge.data.sentences import split_sentences
from bertforge.data.tokenizer import load_tokenizer, tokenizer_hash, train_wordpiece


def shard_files(folder):
    return sorted(p.name for p in folder.glob("shard_*"))


def write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def test_prepared_matches_direct_tokenization(prepared, wiki_slice, tokenizer_dir):
    out, stats = prepared
    ds = IndexedDataset(out)
    tok = load_tokenizer(tokenizer_dir)
    assert ds.tokenizer_hash == tokenizer_hash(tok) and ds.num_docs == stats.documents == 2500
    assert ds.meta["shards"] == [f"shard_000000_{j:04d}" for j in range(4)] and ds.num_tokens == stats.tokens
    docs = list(read_documents([wiki_slice]))
    first_of_shard1 = ds.headers[0]["n_docs"]
    for d in (0, first_of_shard1, 2499):
        want = [tok.encode(s, add_special_tokens=False).ids for s in split_sentences(docs[d].text)]
        assert [s.tolist() for s in ds.document(d)] == want
    counts = ds.unigram_counts()
    assert counts.sum() == ds.num_tokens and counts[:5].sum() == 0
    assert np.array_equal(counts, np.bincount(ds.gather(np.arange(ds.num_tokens)), minlength=len(counts)))
    assert not list(out.glob(".*tmp*")) and stats.complete


def test_shards_are_sized_by_text_bytes(prepared):
    out, _ = prepared
    ds = IndexedDataset(out)
    sizes = [h["stats"]["text_bytes"] for h in ds.headers]
    assert all(350_000 <= s < 350_000 + 20_000 for s in sizes[:-1]) and sizes[-1] < 350_000  # closed on reaching it


def test_book_length_documents_do_not_make_giant_shards(tokenizer_dir, tmp_path):
    books = [" ".join(f"Chapter {b} line {i} is here." for i in range(400)) for b in range(6)]  # ~11 kB each
    src = tmp_path / "books.json"  # one file that cannot be cut: one task, its shards closed by text bytes
    src.write_text(json.dumps(books * 3))
    stats = prepare([src], tokenizer_dir, tmp_path / "out", shard_bytes=20_000, progress=False)
    ds = IndexedDataset(tmp_path / "out")
    assert stats.tasks == 1 and stats.documents == 18
    assert [h["n_docs"] for h in ds.headers] == [2] * 9  # shards of two books each, not one of 18


def test_rerun_skips_finished_shards_and_redoes_missing(prepared, wiki_slice, tokenizer_dir, tmp_path):
    out, _ = prepared
    work = tmp_path / "ds"
    work.mkdir()
    for f in out.iterdir():
        if f.is_file():
            (work / f.name).write_bytes(f.read_bytes())
    (work / "shard_000000_0002.idx").unlink()           # an interrupted run: shard 2 never finished
    (work / ".shard_000000_0002.bin.tmp-123-x").write_bytes(b"partial")
    stats = prepare([wiki_slice], tokenizer_dir, work, shard_bytes=350_000, progress=False)
    assert (stats.shards_skipped, stats.shards_written) == (3, 1)
    assert (work / "shard_000000_0002.bin").read_bytes() == (out / "shard_000000_0002.bin").read_bytes()
    assert (work / "unigram.npy").read_bytes() == (out / "unigram.npy").read_bytes()
    assert not list(work.glob(".*tmp*"))
    assert json.loads((work / "meta.json").read_text())["n_tokens"] == stats.tokens


def test_parallel_workers_give_identical_datasets(wiki_slice, tokenizer_dir, tmp_path):
    texts = [d.text for d in read_documents([wiki_slice])][:900]
    src = write_jsonl(tmp_path / "small.jsonl", texts)
    a = prepare([src], tokenizer_dir, tmp_path / "a", shard_bytes=40_000, progress=False)
    b = prepare([src], tokenizer_dir, tmp_path / "b", shard_bytes=40_000, workers=2, progress=False)
    assert a.tasks == b.tasks > 6 and a.tokens == b.tokens and b.workers_cpu_s > 0
    names = shard_files(tmp_path / "a")
    assert names == shard_files(tmp_path / "b") and len(names) == 2 * a.tasks
    for name in names + ["unigram.npy"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    meta = [json.loads((tmp_path / x / "meta.json").read_text()) for x in "ab"]
    assert meta[0]["dataset_id"] == meta[1]["dataset_id"] and meta[0]["shards"] == meta[1]["shards"]


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


def test_line_numbers_of_a_cut_file_count_from_its_start(tokenizer_dir, tmp_path):
    long = " ".join(["word"] * 80) + "."
    texts = [f"Document {i} is short. It has two sentences." for i in range(300)] + [f"Then {long}"]
    src = write_jsonl(tmp_path / "c.jsonl", texts)
    stats = prepare([src], tokenizer_dir, tmp_path / "out", max_seq_length=32, shard_bytes=1000, workers=2,
                    progress=False)
    assert stats.tasks > 10 and stats.warnings == [
        f"{src}:301: sentence of 82 tokens split into pieces of at most 29"]


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
    tokens = ds.shard_tokens.view(0)
    assert tokens.dtype == np.uint16 and isinstance(tokens, np.ndarray) and not tokens.flags.writeable
    assert (prepared[0] / "shard_000000_0000.bin").stat().st_size == 2 * len(tokens)


@pytest.mark.parametrize("settings, match", [
    (dict(shard_bytes=0), "--shard-bytes must be a positive integer"),
    (dict(shard_bytes="0M"), "--shard-bytes must be a positive integer"),
    (dict(shard_bytes="lots"), "--shard-bytes takes a byte count"),
    (dict(workers=0), "--workers must be a positive integer"),
    (dict(max_seq_length=0), "--max-seq-length must be at least 5"),
    (dict(part="2/2"), "--part must be K/N with parts numbered 0 .. N-1"),
    (dict(part="1/0"), "--part must be K/N"),
    (dict(format="csv"), "--format: invalid choice 'csv'"),
])
def test_sizes_and_settings_refuse_zero_and_nonsense(settings, match):
    with pytest.raises(ConfigError, match=match):
        PrepareConfig(**settings)


def test_shard_size_flag_of_zero_is_refused_in_one_line(tokenizer_dir, tmp_path, capsys):
    from bertforge.cli import main

    src = write_jsonl(tmp_path / "x.jsonl", ["One. Two."])
    assert main(["prepare", str(src), "--tokenizer", str(tokenizer_dir), "--out", str(tmp_path / "o"),
                 "--shard-bytes", "0"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--shard-bytes must be a positive integer, got 0" in err
    assert not (tmp_path / "o").exists()
    assert parse_size("64M") == 64 << 20 and parse_size("1g") == 1 << 30 and parse_size(4096) == 4096


def test_a_worker_error_names_the_file_and_its_line(tokenizer_dir, tmp_path):
    lines = [json.dumps({"text": f"Document {i} is here. It ends."}) for i in range(400)]
    lines[333] = '{"text": "broken'
    src = tmp_path / "c.jsonl"
    src.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"^{src}:334: not valid JSON"):
        prepare([src], tokenizer_dir, tmp_path / "out", shard_bytes=1000, workers=2, progress=False)
    assert not (tmp_path / "out" / "meta.json").exists() and not list((tmp_path / "out").glob(".*tmp*"))


@pytest.mark.parametrize("sizes", [[5] * 10, [1, 100, 1, 1, 50, 3, 7, 80, 2], [0, 0, 0], [9]])
@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_parts_cover_the_plan_once_in_order_and_balanced(sizes, n):
    from bertforge.data.prepare import Task, part_of

    tasks = [Task(i, (), s) for i, s in enumerate(sizes)]
    parts = [part_of(tasks, k, n) for k in range(n)]
    assert [t.index for p in parts for t in p] == list(range(len(tasks)))  # disjoint, complete, contiguous
    total = sum(sizes)
    if total and n <= len(tasks):
        assert max(sum(t.size for t in p) for p in parts) <= total / n + max(sizes)
