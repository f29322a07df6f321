"""Vocabularies are checked when loaded. Kinds and the variants covered:

- bad lines shift ids (ids are line numbers): a blank line, a whitespace-only line, a duplicate entry, a CRLF file
  (accepted), a last line without newline (accepted) -> DataError naming file:line (and the first line of a duplicate)
- case: a bare vocab.txt with upper-case entries is read cased, one without them uncased, tokenizer_config.json's
  do_lower_case wins over the detection, and `tokenizer info` prints which and why
- size against the model: a tokenizer with more ids than embedding rows is one line naming both numbers (fewer ids
  than rows, padded embeddings, is accepted)
- `tokenizer train --vocab-size` below the minimum is refused
"""
import json

import pytest

from bertforge.data.tokenizer import check_vocab_file, check_vocab_rows, decide_case, load_tokenizer, train_wordpiece
from bertforge.errors import CheckpointError, ConfigError, DataError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def vocab(tmp_path, entries, ending="\n", last=True, name="vocab.txt"):
    p = tmp_path / name
    p.write_bytes((ending.join(entries) + (ending if last else "")).encode())
    return p


@pytest.mark.parametrize("entries,line,what", [
    (SPECIALS + ["a", "", "b"], 7, "blank line"),
    (SPECIALS + ["a", "  ", "b"], 7, "blank line"),
    (SPECIALS + ["a", "b", "a"], 8, r"duplicate vocabulary entry 'a' \(first on line 6\)"),
])
def test_bad_lines_named(tmp_path, entries, line, what):
    p = vocab(tmp_path, entries)
    with pytest.raises(DataError, match=rf"vocab.txt:{line}: {what}"):
        load_tokenizer(p)
    with pytest.raises(DataError, match=rf":{line}: "):
        load_tokenizer(tmp_path)  # the folder too


def test_crlf_and_missing_last_newline_accepted(tmp_path):
    assert check_vocab_file(vocab(tmp_path, SPECIALS + ["a", "b"], "\r\n")) == SPECIALS + ["a", "b"]
    tok = load_tokenizer(vocab(tmp_path, SPECIALS + ["a", "b"], last=False, name="v2.txt"))
    assert tok.token_to_id("b") == 6


def test_case_detected_from_entries(tmp_path):
    cased = vocab(tmp_path, SPECIALS + ["Paris", "paris", "London"])
    d = decide_case(cased)
    assert not d.lowercase and "2 entries" in d.describe() and d.describe().startswith("cased")
    assert "Paris" in load_tokenizer(cased).encode("Paris").tokens  # reachable: read cased
    (tmp_path / "u").mkdir()
    uncased = vocab(tmp_path / "u", SPECIALS + ["paris", "##s"])
    assert decide_case(uncased).lowercase
    assert load_tokenizer(uncased).encode("PARIS").tokens[1] == "paris"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    assert decide_case(cased).lowercase and "do_lower_case" in decide_case(cased).reason  # explicit config wins


def test_tokenizer_info_says_cased(tmp_path, capsys):
    from bertforge.cli import main

    vocab(tmp_path, SPECIALS + ["Paris", "x"])
    assert main(["tokenizer", "info", str(tmp_path)]) == 0
    assert "cased (detected: 1 entries" in capsys.readouterr().out


def test_tokenizer_larger_than_embedding_rows():
    with pytest.raises(CheckpointError, match="has 120 tokens but the model m has 100 word-embedding rows"):
        check_vocab_rows(120, 100, "tok", "m")
    check_vocab_rows(100, 128, "tok", "m")  # padded embedding rows are fine


def test_vocab_size_too_small(tmp_path):
    with pytest.raises(ConfigError, match="--vocab-size 3 is too small"):
        train_wordpiece(["a b c"], tmp_path, vocab_size=3, show_progress=False)
