"""Tag files are read as what they are, and columns split only at ASCII space or TAB. Kinds and variants covered:

- BILOU (spaCy): U- single, B- L- multi-word, B- I- L- three words, read as the same entities as BIOES; broken
  BILOU (an L- after O, a B- left open) named with BILOU's prefixes; predictions written back in BILOU;
  a BILOU file read as iob2 points to --scheme bilou
- integer tag ids: JSONL ints without names refused naming the cause; with --label-names as a comma list, a
  one-name-a-line file, a JSON list and a datasets dataset_info.json; an id out of range; CoNLL integer columns
- untyped B / I / E tags refused naming them (not sent to --scheme plain)
- hints: only existing schemes (no "O-TYPE"); an E-/S- tag in iob2 points to bioes
- columns: U+00A0 inside a token ("10 000"), U+202F, U+3000 and U+0085 kept in the token; a whitespace-only token
  (U+00A0, U+3000) named with its code point; a TAB file with a space-separated line and a space file with a TAB
  line refused naming the line
- `.csv` given as NER data refused
"""
import json
import re

import pytest

from bertforge.errors import ConfigError, DataError
from bertforge.finetuning import data_ner as dn


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_bilou_reads_as_entities(tmp_path):
    bilou = ["U-PER", "O", "B-LOC", "L-LOC", "B-ORG", "I-ORG", "L-ORG"]
    bioes = ["S-PER", "O", "B-LOC", "E-LOC", "B-ORG", "I-ORG", "E-ORG"]
    iob2 = dn.to_iob2(bioes, "bioes")
    assert dn.to_iob2(bilou, "bilou") == iob2 == ["B-PER", "O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "I-ORG"]
    assert dn.from_iob2(iob2, "bilou") == bilou
    p = write(tmp_path, "a.conll", "".join(f"w{i}\t{t}\n" for i, t in enumerate(bilou)))
    assert dn.read_conll(p, "bilou")[0].tags == iob2
    assert dn.tag_vocab(dn.read_conll(p, "bilou"), scheme="bilou") == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG",
                                                                        "B-PER", "I-PER"]


@pytest.mark.parametrize("tags,msg", [
    (["O", "L-PER"], r"'L-PER' after 'O' continues no entity \(BILOU entities start with B- or U-\)"),
    (["B-PER", "O"], r"'B-PER' is not closed: BILOU needs I-PER or L-PER after it"),
])
def test_broken_bilou_named(tmp_path, tags, msg):
    p = write(tmp_path, "b.conll", "".join(f"w\t{t}\n" for t in tags))
    with pytest.raises(DataError, match=msg):
        dn.read_conll(p, "bilou")


def test_bilou_read_as_iob2_points_to_bilou(tmp_path):
    p = write(tmp_path, "c.conll", "Jo\tU-PER\n")
    with pytest.raises(DataError, match=r"c.conll:1: tag 'U-PER' .*pass --scheme bilou"):
        dn.read_conll(p)


def test_hint_lists_only_real_schemes(tmp_path):
    with pytest.raises(DataError) as e:
        dn.read_conll(write(tmp_path, "d.conll", "Jo\tE-PER\n"))
    assert "pass --scheme bioes" in str(e.value) and "O-TYPE" not in str(e.value)
    with pytest.raises(DataError) as e:
        dn.read_conll(write(tmp_path, "e.conll", "Jo\tX-PER\n"), "bioes")
    assert "expected O or B-TYPE / I-TYPE / E-TYPE / S-TYPE" in str(e.value) and "--scheme plain" in str(e.value)


def test_untyped_tags_named(tmp_path):
    for tag in ("B", "I", "E"):
        with pytest.raises(DataError, match=rf"f.conll:1: tag '{tag}' has no entity type \(untyped B/I/O tags\)"):
            dn.read_conll(write(tmp_path, "f.conll", f"Jo\t{tag}\n"), "bioes")


NAMES = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def test_integer_ids_without_names_refused(tmp_path):
    p = write(tmp_path, "g.jsonl", json.dumps({"tokens": ["Jo", "lives"], "ner_tags": [1, 0]}) + "\n")
    with pytest.raises(DataError, match=r"g.jsonl:1: tag 1 is an integer id, not a tag name; .*--label-names"):
        dn.read_conll(p)
    with pytest.raises(DataError, match=r"h.conll:1: tag '1' is an integer id"):
        dn.read_conll(write(tmp_path, "h.conll", "Jo\t1\n"))


def test_integer_ids_with_names(tmp_path):
    p = write(tmp_path, "g.jsonl", json.dumps({"tokens": ["Jo", "Smith", "in", "Rome"], "ner_tags": [1, 2, 0, 3]}))
    info = {"features": {"ner_tags": {"feature": {"names": NAMES}}}}
    sources = [",".join(NAMES), str(write(tmp_path, "names.txt", "\n".join(NAMES) + "\n")),
               str(write(tmp_path, "names.json", json.dumps(NAMES))),
               str(write(tmp_path, "dataset_info.json", json.dumps(info)))]
    for source in sources:
        names = dn.read_label_names(source)
        assert dn.read_conll(p, label_names=names)[0].tags == ["B-PER", "I-PER", "O", "B-LOC"]
    conll = write(tmp_path, "i.conll", "Jo\t1\nin\t0\n")
    assert dn.read_conll(conll, label_names=NAMES)[0].tags == ["B-PER", "O"]
    with pytest.raises(DataError, match=r"j.conll:1: tag '7' is not an id of the 5 --label-names"):
        dn.read_conll(write(tmp_path, "j.conll", "Jo\t7\n"), label_names=NAMES)
    with pytest.raises(ConfigError, match="distinct"):
        dn.read_label_names("O,O")


@pytest.mark.parametrize("space", ["\u00a0", "\u202f", "\u3000", "\u0085"])
def test_unicode_spaces_stay_inside_tokens(tmp_path, space):
    p = write(tmp_path, "k.conll", f"10{space}000\tO\nCh{space}teau B-LOC\n".replace(" B-LOC", "\tB-LOC"))
    assert dn.read_conll(p)[0].tokens == [f"10{space}000", f"Ch{space}teau"]
    p = write(tmp_path, "l.conll", f"10{space}000 NUM O\nx NUM O\n")
    assert dn.read_conll(p)[0].tokens == [f"10{space}000", "x"]


@pytest.mark.parametrize("space,name", [("\u00a0", "U+00A0 NO-BREAK SPACE"), ("\u3000", "U+3000 IDEOGRAPHIC SPACE")])
def test_whitespace_only_token_named(tmp_path, space, name):
    with pytest.raises(DataError, match=rf"m.conll:2: the token is only whitespace \({re.escape(name)}\)"):
        dn.read_conll(write(tmp_path, "m.conll", f"a\tO\n{space}\tO\n"))
    p = write(tmp_path, "m.jsonl", json.dumps({"tokens": ["a", space], "tags": ["O", "O"]}) + "\n")
    with pytest.raises(DataError, match=rf"m.jsonl:1: the token is only whitespace \({re.escape(name)}\)"):
        dn.read_conll(p)


def test_mixed_tab_and_space_columns_refused(tmp_path):
    with pytest.raises(DataError, match=r"n.conll:2: the line separates columns with spaces but the file's first "
                                        r"lines use TAB"):
        dn.read_conll(write(tmp_path, "n.conll", "Paris\tB-LOC\nNew York B-LOC\n"))
    with pytest.raises(DataError, match=r"o.conll:3: the line separates columns with TAB"):
        dn.read_conll(write(tmp_path, "o.conll", "Paris B-LOC\n\nNew York\tB-LOC\n"))


def test_csv_is_not_ner_data(tmp_path):
    with pytest.raises(DataError, match=r"p.csv: a .csv file is not token-classification data"):
        dn.read_conll(write(tmp_path, "p.csv", "text,label\nJo,B-PER\n"))
