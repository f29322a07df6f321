"""Input faults of finetuning data, each fixed as a kind and tested on the handed inputs (tests/finetuning/data/, copied
from the shared cases `label-only-in-heldout` and `iob1-file-default-scheme`) and on generated inputs of the same kind:
- the automatic split is stratified: every label with >= 2 examples (NER: every entity type in >= 2 sentences) lands
  in train, labels come from the whole file, and a label that training lacks is scored as a miss, never refused;
- a tag file that breaks its declared scheme's rules is refused with file:line and the scheme it looks like."""
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from bertforge.cli import main
from bertforge.errors import DataError
from bertforge.finetuning import data_classify as dc
from bertforge.finetuning import data_ner as dn

DATA = Path(__file__).with_name("data")
FAST = ["--threads", "1", "--no-progress", "--global-batch", "8", "--max-seq-length", "16", "--epochs", "1",
        "--recipe", "lecture"]


# ---- scheme validity ----------------------------------------------------------------------------------------------
def test_handed_iob1_file_with_the_default_scheme_is_refused_with_file_line_and_scheme():
    with pytest.raises(DataError) as err:
        dn.read_conll(DATA / "iob1_train.conll")
    assert str(err.value) == (f"{DATA / 'iob1_train.conll'}:1: tag 'I-PER' at the start of a sentence starts an "
                              f"entity, which IOB2 does not allow (entities start with B-); this looks like IOB1: pass "
                              f"--scheme iob1")
    sents = dn.read_conll(DATA / "iob1_test.conll", "iob1")
    from bertforge.finetuning.metrics import iob2_spans

    assert sum(len(iob2_spans(s.tags)) for s in sents) == 15  # as seqeval's default (conlleval) mode counts them


def _random_iob2(rng, n, types=("PER", "LOC", "ORG")):
    tags, i = [], 0
    while i < n:
        if rng.random() < 0.4:
            t, k = rng.choice(types), rng.randint(1, 3)
            tags += [f"B-{t}"] + [f"I-{t}"] * (k - 1)
            i += k
        else:
            tags.append("O")
            i += 1
    return tags[:n]  # a cut entity is still valid IOB2


def test_scheme_rules_on_generated_sequences():
    """Valid IOB2 / BIOES / IOB1 sequences pass their own scheme; an IOB1 sequence that starts an entity with I- is
    refused as IOB2 and recognised as IOB1; any IOB2 sequence with an entity is refused as BIOES and recognised as
    IOB2; an I- after another type or after O is refused as IOB2 wherever it sits."""
    rng = random.Random(0)
    refused_iob1 = 0
    for _ in range(500):
        iob2 = _random_iob2(rng, rng.randint(1, 12))
        assert dn.scheme_violation(iob2, "iob2") is None
        bioes, iob1 = dn.from_iob2(iob2, "bioes"), dn.from_iob2(iob2, "iob1")
        assert dn.scheme_violation(bioes, "bioes") is None and dn.to_iob2(bioes, "bioes") == iob2
        assert dn.to_iob2(iob1, "iob1") == iob2
        if iob1 != iob2:
            index, _ = dn.scheme_violation(iob1, "iob2")
            assert iob1[index].startswith("I-") and dn.likely_scheme(iob1) == "iob1"
            refused_iob1 += 1
        if any(t != "O" for t in iob2):
            assert dn.scheme_violation(iob2, "bioes") is not None and dn.likely_scheme(iob2) == "iob2"
    assert refused_iob1 > 100
    assert dn.scheme_violation(["B-PER", "I-LOC"], "iob2")[0] == 1
    assert dn.scheme_violation(["O", "O", "I-LOC"], "iob2")[0] == 2
    assert dn.scheme_violation(["B-PER", "I-PER", "O", "S-LOC"], "bioes")[0] == 2  # B- I- not closed by E-
    assert dn.scheme_violation(["S-PER", "E-PER"], "bioes")[0] == 1


@pytest.mark.parametrize("content,scheme,line,guess", [
    ("a\tO\nb\tI-PER\n", "iob2", 2, "iob1"),
    ("a\tB-PER\nb\tO\n\nc\tO\nd\tB-LOC\ne\tI-ORG\n", "iob2", 6, "iob1"),
    ("a\tB-PER\nb\tI-PER\n\nc\tB-LOC\n", "bioes", 2, "iob2"),
    ("a\tS-PER\nb\tO\n", "iob2", 1, "bioes"),
])
def test_reader_names_file_line_and_likely_scheme(tmp_path, content, scheme, line, guess):
    path = tmp_path / "tags.conll"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=rf"tags.conll:{line}: .*this looks like {guess.upper()}: pass --scheme {guess}"):
        dn.read_conll(path, scheme)
    jsonl = tmp_path / "tags.jsonl"  # the JSONL reader applies the same rules
    sents = [s.split("\n") for s in content.strip().split("\n\n")]
    jsonl.write_text("".join(json.dumps({"tokens": [r.split("\t")[0] for r in s], "tags": [r.split("\t")[1] for r in s]})
                             + "\n" for s in sents), encoding="utf-8")
    with pytest.raises(DataError, match=rf"this looks like {guess.upper()}"):
        dn.read_conll(jsonl, scheme)


def test_pos_tags_read_as_entities_point_to_plain(tmp_path):
    path = tmp_path / "pos.conll"
    path.write_text("The\tDT\ncat\tNN\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"pos.conll:1: tag 'DT' is not a valid IOB2 tag .*pass --scheme plain"):
        dn.read_conll(path)
    assert dn.read_conll(path, "plain")[0].tags == ["DT", "NN"]


# ---- stratified split -------------------------------------------------------------------------------------------
def _labelled(rng, counts):
    out = [dc.Example(f"text {label} {i} {rng.random()}", None, label, "f", i) for label, n in counts.items()
           for i in range(n)]
    rng.shuffle(out)
    return out


@pytest.mark.parametrize("sizes", [(0.7, 0.15, 0.15), (0.8, 0.1, 0.1), (0.5, 0.5), (0.34, 0.33, 0.33)])
def test_classification_split_keeps_every_label_in_train(sizes):
    rng = random.Random(1)
    for seed in range(25):
        counts = {"big": rng.randint(30, 80), "mid": rng.randint(5, 15), "rare": rng.randint(2, 3),
                  "single": 1}
        examples = _labelled(rng, counts)
        parts = dc.split_examples(examples, sizes, seed)
        assert sorted(e.line for p in parts for e in p) == sorted(e.line for e in examples)  # a partition
        train_labels = {e.label for e in parts[0]}
        assert {"big", "mid", "rare"} <= train_labels
        n = len(examples)
        for part, share in zip(parts, sizes):
            assert abs(len(part) - share * n) <= len(counts)
        big_share = [Counter(e.label for e in p)["big"] / max(len(p), 1) for p in parts if len(p) > 10]
        assert max(big_share) - min(big_share) < 0.25  # proportions follow the whole


def test_ner_split_keeps_every_type_in_two_sentences_in_train():
    rng = random.Random(2)
    for seed in range(25):
        sents = []
        for i in range(60):
            types = ["PER"] * rng.randint(0, 2) + (["LOC"] if rng.random() < 0.5 else [])
            if i < 2:
                types.append("EVENT")  # in exactly 2 sentences
            if i == 2:
                types.append("ONCE")
            tags = [t for ty in types for t in (f"B-{ty}", "O")] or ["O"]
            sents.append(dn.Sentence([f"w{k}" for k in range(len(tags))], tags, "f", list(range(len(tags)))))
        rng.shuffle(sents)
        parts = dn.split_sentences(sents, (0.8, 0.1, 0.1), seed)
        assert sorted(id(s) for p in parts for s in p) == sorted(id(s) for s in sents)
        train_types = set().union(*(dn.sentence_types(s, "iob2") for s in parts[0]))
        assert {"PER", "LOC", "EVENT"} <= train_types
        assert [abs(len(p) - f * 60) <= 3 for p, f in zip(parts, (0.8, 0.1, 0.1))] == [True] * 3
        part_sizes = [len(p) for p in dn.split_sentences(sents, (0.5, 0.2), seed)]  # 30% left out
        assert len(part_sizes) == 2 and abs(part_sizes[0] - 30) <= 3 and abs(part_sizes[1] - 12) <= 3


# ---- the handed cases, end to end ------------------------------------------------------------------------------
def test_handed_reviews_split_runs_with_all_labels(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "run_cls"
    assert main(["finetune", "classify", "--model", str(tiny_ckpt), "--data", str(DATA / "reviews.csv"),
                 "--split", "0.7,0.15,0.15", "--split-seed", "5", "--out", str(out), *FAST]) == 0
    task = json.loads((out / "seed-1" / "bertforge_task.json").read_text())
    assert task["labels"] == ["neg", "neutral", "pos"]
    train = dc.read_examples(out / "splits" / "train.jsonl")
    assert Counter(e.label for e in train)["neutral"] >= 1


def test_handed_conll_split_runs_with_every_type(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "run_ner"
    assert main(["finetune", "ner", "--model", str(tiny_ckpt), "--data", str(DATA / "all.conll"),
                 "--split", "0.8,0.1,0.1", "--split-seed", "9", "--out", str(out), *FAST]) == 0
    task = json.loads((out / "seed-1" / "bertforge_task.json").read_text())
    assert {l[2:] for l in task["labels"] if l != "O"} == {"EVENT", "LOC", "PER"}  # every type of the file
    train = dn.read_conll(out / "splits" / "train.conll")
    assert {"LOC", "PER"} <= set().union(*(dn.sentence_types(s, "iob2") for s in train))
    # the user's own files: a type only in test is a miss, reported, not a refusal
    no_event = tmp_path / "no_event.conll"
    no_event.write_text("\n\n".join("\n".join(f"{w}\t{t}" for w, t in zip(s.tokens, s.tags))
                                    for s in dn.read_conll(DATA / "all.conll") if "EVENT" not in " ".join(s.tags)),
                        encoding="utf-8")
    capsys.readouterr()
    assert main(["finetune", "ner", "--model", str(tiny_ckpt), "--train", str(no_event),
                 "--test", str(DATA / "all.conll"), "--out", str(tmp_path / "run_ner2"), *FAST]) == 0
    printed = capsys.readouterr().out
    assert f"warning: test entity type 'EVENT' (1 sentence(s), first at {DATA / 'all.conll'}:" in printed
    assert "counts as a miss" in printed
    test = json.loads((tmp_path / "run_ner2" / "summary.json").read_text())["runs"][0]["test"]
    assert test["n_gold"] == 80  # 40 PER + 39 LOC + 1 EVENT: every gold entity is counted
    assert test["per_type"]["EVENT"]["support"] == 1 and test["per_type"]["EVENT"]["recall"] == 0.0


def test_handed_iob1_files_train_with_scheme_iob1(tiny_ckpt, tmp_path, capsys):
    flags = ["finetune", "ner", "--model", str(tiny_ckpt), "--train", str(DATA / "iob1_train.conll"), "--dev",
             str(DATA / "iob1_test.conll"), "--test", str(DATA / "iob1_test.conll"), *FAST]
    assert main([*flags, "--out", str(tmp_path / "run")]) == 2
    assert "iob1_train.conll:1: tag 'I-PER' at the start of a sentence" in capsys.readouterr().err
    assert main([*flags, "--scheme", "iob1", "--out", str(tmp_path / "run_iob1")]) == 0
    summary = json.loads((tmp_path / "run_iob1" / "summary.json").read_text())
    assert summary["runs"][0]["test"]["n_gold"] == 15
