"""Readers, tag schemes, sub-word alignment, windows and the bad-input errors (file and line named)."""
import pytest

from bertforge.data.tokenizer import load_tokenizer
from bertforge.errors import UserError
from bertforge.finetuning import data_classify as dc
from bertforge.finetuning import data_ner as dn


def write(tmp_path, name, content, mode="w"):
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    return p


# ---- CoNLL ------------------------------------------------------------------------------------------------------
def test_conll_tabs_spaces_docstart_and_whitespace_lines(tmp_path):
    p = write(tmp_path, "a.conll", "-DOCSTART- -X- O O\n\nJohn NNP B-NP B-PER\nlives VBZ B-VP O\n \t\n"
                                    "Paris NNP B-NP B-LOC\n")
    sents = dn.read_conll(p)
    assert [s.tokens for s in sents] == [["John", "lives"], ["Paris"]]
    assert [s.tags for s in sents] == [["B-PER", "O"], ["B-LOC"]]
    assert sents[0].lines == [3, 4] and sents[1].lines == [6]
    tabs = dn.read_conll(write(tmp_path, "b.conll", "John\tB-PER\n \t\nParis\tB-LOC\n"))
    assert [s.tokens for s in tabs] == [["John"], ["Paris"]]


def test_scheme_conversion_round_trip():
    iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"]
    iob2 = ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG"]
    bioes = ["B-PER", "E-PER", "S-PER", "O", "S-LOC", "S-ORG"]
    assert dn.to_iob2(iob1, "iob1") == iob2
    assert dn.to_iob2(bioes, "bioes") == iob2
    assert dn.from_iob2(iob2, "iob1") == iob1
    assert dn.from_iob2(iob2, "bioes") == bioes
    assert dn.from_iob2(["O", "I-X", "I-X"], "bioes") == ["O", "O", "O"]  # a stray I- is no entity


def test_missing_tag_names_file_and_line(tmp_path):
    p = write(tmp_path, "bad.conll", "John\tB-PER\nlives\n")
    with pytest.raises(UserError, match=r"bad.conll:2: missing tag for token 'lives'"):
        dn.read_conll(p)


def test_invalid_tag_for_scheme(tmp_path):
    p = write(tmp_path, "bad.conll", "John\tS-PER\n")
    with pytest.raises(UserError, match=r"bad.conll:1: tag 'S-PER' is not a valid IOB2 tag"):
        dn.read_conll(p)
    assert dn.read_conll(p, "bioes")[0].tags == ["B-PER"]


def test_jsonl_token_tag_count_mismatch(tmp_path):
    p = write(tmp_path, "bad.jsonl", '{"tokens": ["a", "b"], "tags": ["O", "O"]}\n'
                                     '{"tokens": ["a", "b", "c"], "tags": ["O", "O"]}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: 3 tokens but 2 tags"):
        dn.read_conll(p)


@pytest.mark.parametrize("reader", ["conll", "csv"])
def test_empty_file(tmp_path, reader):
    p = write(tmp_path, f"empty.{reader}", "\n  \n")
    with pytest.raises(UserError, match=r"empty\.\w+: file is empty"):
        dn.read_conll(p) if reader == "conll" else dc.read_examples(p)


def test_non_utf8_bytes_name_the_line(tmp_path):
    p = write(tmp_path, "latin.csv", b"text,label\nfine,pos\ncaf\xe9,neg\n")
    with pytest.raises(UserError, match=r"latin.csv:3: byte 0xe9 is not valid utf-8"):
        dc.read_examples(p)
    assert dc.read_examples(p, encoding="latin-1")[1].text == "caf\u00e9"
    q = write(tmp_path, "latin.conll", b"Jos\xe9\tB-PER\n")
    with pytest.raises(UserError, match=r"latin.conll:1: byte 0xe9"):
        dn.read_conll(q)


def test_dev_type_missing_from_train_is_reported_and_kept(tmp_path):
    train = dn.read_conll(write(tmp_path, "train.conll", "John\tB-PER\n"))
    dev = dn.read_conll(write(tmp_path, "dev.conll", "x\tO\n\nParis\tB-LOC\n"))
    (line,) = dn.types_missing_from_train(train, {"dev": dev})
    assert line.startswith("dev entity type 'LOC' (1 sentence(s), first at ") and "dev.conll:3)" in line
    assert dn.tag_vocab(train, dev) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]  # the head can score it


# ---- CSV / TSV / JSONL --------------------------------------------------------------------------------------------
def test_csv_tsv_jsonl_and_pairs(tmp_path):
    c = write(tmp_path, "a.csv", 'text,label\n"hello, world",pos\n\n"multi\nline",neg\n')
    ex = dc.read_examples(c)
    assert [(e.text, e.label, e.line) for e in ex] == [("hello, world", "pos", 2), ("multi\nline", "neg", 4)]
    t = write(tmp_path, "a.tsv", "text_a\ttext_b\ty\nA\tB\t1\n")
    e = dc.read_examples(t, "text_a", "text_b", "y")[0]
    assert (e.text, e.text_b, e.label) == ("A", "B", "1")
    j = write(tmp_path, "a.jsonl", '{"text": "x\u2028z", "label": 2}\r\n\n{"text": "y", "label": 0}\n')
    assert [(e.label, e.line) for e in dc.read_examples(j)] == [("2", 1), ("0", 3)]  # U+2028 is no line break


def test_missing_column(tmp_path):
    c = write(tmp_path, "a.csv", "sentence,label\nhi,pos\n")
    with pytest.raises(UserError, match=r"a.csv:1: no column 'text' in the header \(columns: sentence, label\)"):
        dc.read_examples(c)
    j = write(tmp_path, "a.jsonl", '{"text": "x", "label": 1}\n{"text": "y"}\n')
    with pytest.raises(UserError, match=r"a.jsonl:2: no column 'label'"):
        dc.read_examples(j)


def test_test_label_missing_from_train_is_reported_and_kept(tmp_path):
    train = dc.read_examples(write(tmp_path, "train.csv", "text,label\na,pos\nb,neg\n"))
    test = dc.read_examples(write(tmp_path, "test.csv", "text,label\na,pos\nc,neutral\n"))
    (line,) = dc.labels_missing_from_train(train, {"dev": [], "test": test})
    assert line.startswith("test label 'neutral' (1 example(s), first at ") and "test.csv:3)" in line
    assert dc.label_vocab(train, test) == ["neg", "neutral", "pos"]


def test_split_keeps_duplicates_together_and_is_deterministic():
    ex = [dc.Example(f"text {i % 40}", None, str(i % 3), "f", i) for i in range(100)]
    parts = dc.split_examples(ex, [0.6, 0.2, 0.2], seed=3)
    seen = [{e.text for e in p} for p in parts]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert sum(map(len, parts)) == 100
    again = dc.split_examples(ex, [0.6, 0.2, 0.2], seed=3)
    assert [[e.line for e in p] for p in parts] == [[e.line for e in p] for p in again]
    subset = dc.split_examples(ex, [20, 5, 10], seed=0)
    assert [len(p) >= n for p, n in zip(subset, (20, 5, 10))] == [True] * 3


def test_classify_truncates_to_max_seq_length(tiny_ckpt):
    tok = load_tokenizer(tiny_ckpt)
    ex = [dc.Example("good " * 50, None, "pos", "f", 1), dc.Example("bad movie", "good " * 50, "neg", "f", 2)]
    feats = dc.encode(tok, ex, 16, {"pos": 0, "neg": 1})
    assert [len(f["input_ids"]) for f in feats] == [16, 16]
    assert feats[1]["token_type_ids"][:5] == [0, 0, 0, 0, 1]  # [CLS] bad movie [SEP] good...


# ---- alignment and windows ---------------------------------------------------------------------------------------
def _sentence(n):
    words = ["john", "visited", "paris", "xqzv"] * (n // 4)
    tags = ["B-PER", "O", "B-LOC", "O"] * (n // 4)
    return dn.Sentence(words, tags, "s", list(range(1, n + 1)))


@pytest.mark.parametrize("max_seq_length,stride", [(64, 32), (17, 4), (11, 3), (7, 1)])
def test_windows_cover_every_word_once(tiny_ckpt, max_seq_length, stride):
    tok = load_tokenizer(tiny_ckpt)
    sents = [_sentence(40), _sentence(4)]
    labels = dn.tag_vocab(sents)
    label2id = {l: i for i, l in enumerate(labels)}
    wins = dn.encode(tok, sents, max_seq_length, label2id, stride=stride)
    assert all(len(w.input_ids) <= max_seq_length for w in wins)
    if max_seq_length < 64:
        assert sum(w.sentence == 0 for w in wins) > 1
    # the model "predicts" the gold label at every owned first sub-word: words_from_windows must rebuild the tags
    preds = [[lab if lab >= 0 else 0 for lab in w.labels] for w in wins]
    assert dn.words_from_windows(wins, preds, sents, labels) == [s.tags for s in sents]
    owned = sorted((w.sentence, i) for w in wins for i in w.word_index if i >= 0)
    assert owned == sorted({(si, i) for si, s in enumerate(sents) for i in range(len(s.tokens))})
    assert len(owned) == sum(len(s.tokens) for s in sents)


def test_first_subword_vs_all_subwords(tiny_ckpt):
    tok = load_tokenizer(tiny_ckpt)
    sent = dn.Sentence(["xqzv", "paris"], ["B-LOC", "I-LOC"], "s", [1, 2])  # xqzv -> x ##q ##z ##v
    label2id = {"O": 0, "B-LOC": 1, "I-LOC": 2}
    first = dn.encode(tok, [sent], 32, label2id)[0]
    every = dn.encode(tok, [sent], 32, label2id, label_all_subwords=True)[0]
    assert first.labels == [-100, 1, -100, -100, -100, 2, -100]
    assert every.labels == [-100, 1, 2, 2, 2, 2, -100]
    assert first.word_index == every.word_index == [-1, 0, -1, -1, -1, 1, -1]


def test_saved_splits_read_back(tmp_path):
    from bertforge.finetuning.run import save_splits

    sents = [dn.Sentence(["John", "lives"], ["B-PER", "O"], "s", [1, 2]), dn.Sentence(["Paris"], ["B-LOC"], "s", [4])]
    exs = [dc.Example("a, b", None, "pos", "f", 2), dc.Example("c", "d", "neg", "f", 3)]
    save_splits(tmp_path, {"test": sents, "dev": []}, "ner")
    save_splits(tmp_path / "c", {"test": exs}, "classify")
    back = dn.read_conll(tmp_path / "splits" / "test.conll")
    assert [(s.tokens, s.tags) for s in back] == [(s.tokens, s.tags) for s in sents]
    assert not (tmp_path / "splits" / "dev.conll").exists()
    ex = dc.read_examples(tmp_path / "c" / "splits" / "test.jsonl", text_b_column=None)
    assert [(e.text, e.label) for e in ex] == [("a, b", "pos"), ("c", "neg")]
