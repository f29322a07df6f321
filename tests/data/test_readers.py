import gzip
import json

import pytest

from engine.errors import DataError
from engine.data.readers import ReadStats, read_documents
from engine.data.sentences import split_sentences


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
