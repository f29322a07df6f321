import gzip
import json

import pytest

from bertforge.errors import DataError
from bertforge.data.readers import ReadStats, read_documents
from bertforge.data.sentences import split_sentences


def docs(path, fmt=None, stats=None):
    return list(read_documents([path], fmt, stats))


def test_wiki_json_has_line_provenance(wiki_slice):
    ds = docs(wiki_slice)
    assert len(ds) == 2500 and ds[0].line == 2 and ds[1].line > ds[0].line
    assert ds[0].text.startswith("20th-century classical music is")


def test_txt_blocks_and_file_per_doc(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("First doc. Line two.\nmore\n\n\n\nSecond doc here.\n")
    ds = docs(p)
    assert [d.text for d in ds] == ["First doc. Line two. more", "Second doc here."]
    assert [d.line for d in ds] == [1, 6]
    assert len(docs(p, "txt-file")) == 1
    assert [d.text for d in docs(p, "lines")] == ["First doc. Line two.\nmore", "Second doc here."]


def test_gzip_and_jsonl(tmp_path):
    p = tmp_path / "a.jsonl.gz"
    p.write_bytes(gzip.compress(b'{"text": "One. Two."}\n\n{"text": "   "}\n{"text": "Three."}\n'))
    stats = ReadStats()
    ds = docs(p, stats=stats)
    assert [d.text for d in ds] == ["One. Two.", "Three."] and [d.line for d in ds] == [1, 4]
    assert stats.empty_skipped == 1 and stats.skipped_where == [f"{p}:3"]  # counted, reported skip


def test_rst_markup_removed(tmp_path):
    p = tmp_path / "x.rst"
    p.write_text(".. SPDX-License-Identifier: GPL-2.0\n\n=====\nTitle\n=====\n\nSome *text* with :ref:`a link`.\n"
                 "Example::\n\n    code here\n\nAfter code.\n")
    (d,) = docs(p)
    assert "code here" not in d.text and "SPDX" not in d.text and "=====" not in d.text
    assert "Some text with a link." in d.text and "After code." in d.text


@pytest.mark.parametrize("content, fmt, message, line", [
    (b"good line\nbad \xff\xfe here\n", "txt", "invalid UTF-8", 2),
    (b"", "txt", "empty file", 1),
    (b"  \n\n", "txt", "empty file", 1),
    (b'{"text": "ok"}\n{"text": "broken"\n', "jsonl", "not valid JSON", 2),
    (b'{"text": "ok"}\n\n{"title": "no text"}\n', "jsonl", 'lacks "text"', 3),
])
def test_bad_input_one_line_error(tmp_path, content, fmt, message, line):
    p = tmp_path / f"bad.{fmt}"
    p.write_bytes(content)
    with pytest.raises(DataError) as err:
        docs(p)
    assert str(err.value).startswith(f"{p}:{line}: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_gz_invalid_utf8_names_line(tmp_path):
    p = tmp_path / "bad.txt.gz"
    p.write_bytes(gzip.compress(b"a\nb\nc\xc3\n"))
    with pytest.raises(DataError, match=rf"^{p}:3: invalid UTF-8"):
        docs(p)


def test_missing_path():
    with pytest.raises(DataError, match="no such file"):
        docs("/nonexistent/x.txt")


def test_sentence_splitter():
    text = "Dr. Smith met J. R. R. Tolkien in the U.S. in 1950. It was 3.5 km away! \"Why?\" he asked.\n\nNew one"
    assert split_sentences(text) == ["Dr. Smith met J. R. R. Tolkien in the U.S. in 1950.", "It was 3.5 km away!",
                                     '"Why?" he asked.', "New one"]
    assert split_sentences("  \n\n ") == []
    json.dumps(split_sentences("ünïcode. Ça va."))


# ---- streaming, pieces, JSON entry by entry, Parquet / Arrow --------------------------------------------------------
import tracemalloc  # noqa: E402

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from bertforge.data.readers import Piece, documents, plan_pieces, read_piece  # noqa: E402


def _wiki_texts(wiki_slice, n=None):
    return [d.text for d in read_documents([wiki_slice])][:n]


@pytest.mark.parametrize("name", ["big.jsonl", "big.json.gz", "big.txt.gz"])
def test_memory_is_flat_in_file_size(wiki_slice, tmp_path, name):
    texts = _wiki_texts(wiki_slice)
    reps = 8  # ~10 MB of text
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts * reps))
    elif ".json" in name:
        path.write_bytes(gzip.compress(json.dumps(texts * reps, indent=1).encode(), compresslevel=1))
    else:
        one_block = [t.replace("\n\n", " ") for t in texts]  # a blank line ends a .txt document
        path.write_bytes(gzip.compress("\n\n".join(one_block * reps).encode(), compresslevel=1))
    tracemalloc.start()
    n = sum(1 for _ in read_documents([path]))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == len(texts) * reps and peak < 4e6, peak  # the file holds ~10 MB of text


@pytest.mark.parametrize("fmt, target", [("jsonl", 700), ("jsonl", 50_000), ("txt", 900), ("txt", 64_000),
                                         ("lines", 900), ("lines", 64_000)])
def test_pieces_give_the_whole_file_documents_and_lines(wiki_slice, tmp_path, fmt, target):
    texts = _wiki_texts(wiki_slice, 600)
    path = tmp_path / f"c.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"text": t}) + ("\n\n" if i % 7 == 0 else "\n")
                                for i, t in enumerate(texts)))
    else:
        path.write_text("\n\n\n".join(t.replace(". ", ".\n", 3) for t in texts))
    whole = [(d.text, d.line) for d in docs(path, fmt)]
    pieces = plan_pieces(path, fmt, target)
    assert len(pieces) > 3 and pieces[0].start == 0 and pieces[-1].end == -1
    assert all(a.end == b.start for a, b in zip(pieces, pieces[1:]))
    got = [(d.text, d.line) for p in pieces for d in documents(p, ReadStats())]
    assert got == whole


def test_json_entries_stream_with_lines_and_errors(tmp_path):
    p = tmp_path / "l.json"
    p.write_text('[\n  "First doc.",\n  {"text": "Second doc."},\n\n  {"extract": "Third."}\n]\n')
    assert [(d.text, d.line) for d in docs(p)] == [("First doc.", 2), ("Second doc.", 3), ("Third.", 5)]
    for content, line, message in [('{\n  "a": {"extract": "ok"},\n  "b": 5\n}', 3, "must be a string or an object"),
                                   ('{\n  "a": {"extract": "ok"}\n  "b": {}\n}', 3, "expecting ','"),
                                   ('[\n  "ok",\n  "not closed\n', 3, "not valid JSON"),
                                   ('[\n  "ok"\n]\n]', 4, "extra data"),
                                   ('7', 1, "must be an object or a list")]:
        p.write_text(content)
        with pytest.raises(DataError) as err:
            docs(p)
        assert str(err.value).startswith(f"{p}:{line}: ") and message in str(err.value), str(err.value)


def test_text_column_for_jsonl(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"body": "One. Two."}\n{"body": "Three."}\n')
    assert [d.text for d in read_documents([p], text_column="body")] == ["One. Two.", "Three."]
    with pytest.raises(DataError, match=rf'^{p}:1: JSON object lacks "text"'):
        docs(p)


def _table(texts):
    return pa.table({"id": list(range(len(texts))), "content": texts})


def test_parquet_and_arrow_read_like_jsonl(wiki_slice, tmp_path):
    texts = _wiki_texts(wiki_slice, 300) + [None, "  ", "Last one."]
    pq.write_table(_table(texts), tmp_path / "c.parquet", row_group_size=37)
    with pa.OSFile(str(tmp_path / "f.arrow"), "wb") as sink, pa.ipc.new_file(sink, _table(texts).schema) as w:
        w.write_table(_table(texts), max_chunksize=50)
    with pa.OSFile(str(tmp_path / "s.arrow"), "wb") as sink, pa.ipc.new_stream(sink, _table(texts).schema) as w:
        w.write_table(_table(texts), max_chunksize=64)  # Hugging Face datasets' cache files are IPC streams
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"content": t or ""}) + "\n" for t in texts))
    want = [d.text for d in read_documents([tmp_path / "c.jsonl"], text_column="content")]
    for name in ("c.parquet", "f.arrow", "s.arrow"):
        stats = ReadStats()
        got = list(read_documents([tmp_path / name], stats=stats, text_column="content"))
        assert [d.text for d in got] == want and stats.empty_skipped == 2, name
        assert got[-1].line == 303 and stats.skipped_where == [f"{tmp_path / name}:301", f"{tmp_path / name}:302"]
    pieces = plan_pieces(tmp_path / "c.parquet", "parquet", 20_000, "content")
    assert len(pieces) > 3 and [p.start for p in pieces[1:]] == [p.end for p in pieces[:-1]]
    got = [d for p in pieces for d in documents(p, ReadStats(), "content")]
    assert [d.text for d in got] == want and got[-1].line == 303


def test_columnar_errors_name_the_file(tmp_path):
    pq.write_table(pa.table({"n": [1, 2]}), tmp_path / "n.parquet")
    with pytest.raises(DataError, match=rf"^{tmp_path / 'n.parquet'}: no column 'text' \(columns: n\)"):
        docs(tmp_path / "n.parquet")
    with pytest.raises(DataError, match=r"column 'n' holds int64, not text"):
        list(read_documents([tmp_path / "n.parquet"], text_column="n"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=rf"^{tmp_path / 'bad.parquet'}: not a readable Parquet file"):
        docs(tmp_path / "bad.parquet")
    (tmp_path / "bad.arrow").write_bytes(b"not arrow")
    with pytest.raises(DataError, match=rf"^{tmp_path / 'bad.arrow'}: not a readable Arrow file"):
        docs(tmp_path / "bad.arrow")
    with pytest.raises(DataError, match="unknown format"):
        list(read_piece(Piece(str(tmp_path / "n.parquet"), "csv")))
