"""--split takes fractions or counts for both tasks (one parser), classify reads the folder-per-class layout
DIR/<label>/*.txt, and a data file whose suffix names no known format is refused in one line."""
import json

import pytest

from bertforge.cli import main
from bertforge.config.finetune import ClassifyConfig, NerConfig
from bertforge.errors import ConfigError, DataError
from bertforge.finetuning import data_classify as dc
from bertforge.finetuning import data_ner as dn
from tests.finetuning._data import ner_conll, sentiment_csv

FAST = ["--threads", "1", "--no-progress", "--global-batch", "8", "--max-seq-length", "16", "--epochs", "1",
        "--recipe", "lecture"]


# ---- --split: fractions or counts --------------------------------------------------------------------------------
def test_ner_split_takes_counts_like_classify(tmp_path):
    sents = dn.read_conll(ner_conll(tmp_path / "all.conll", 90, 0))
    parts = dn.split_sentences(sents, (50, 12, 20), seed=4)
    assert [len(p) for p in parts] == [50, 12, 20]
    assert len({id(s) for p in parts for s in p}) == 82  # 8 sentences left out, none twice
    assert {t for s in parts[0] for t in dn.sentence_types(s, "iob2")} == {"PER", "LOC"}
    with pytest.raises(ConfigError, match=r"--split: sizes 80,12,20 ask for 112 sentences but there are 90"):
        dn.split_sentences(sents, (80, 12, 20), seed=4)


@pytest.mark.parametrize("cls", [ClassifyConfig, NerConfig])
@pytest.mark.parametrize("split, match", [((0.8, 0.3), "fractions must sum to at most 1"),
                                          ((0.5, 10), "all fractions .* or all counts"),
                                          ((100.5, 10), "all fractions .* or all counts")])
def test_split_values_are_checked_the_same_for_both_tasks(cls, split, match):
    with pytest.raises(ConfigError, match=match):
        cls.from_flat(data_file="x", split=split, output_dir="o")
    assert cls.from_flat(data_file="x", split=(40, 10, 10), output_dir="o").files.split == (40, 10, 10)


def test_ner_cli_runs_with_split_counts(tiny_ckpt, tmp_path):
    data = ner_conll(tmp_path / "all.conll", 60, 1)
    out = tmp_path / "out"
    assert main(["finetune", "ner", "--model", str(tiny_ckpt), "--data", str(data), "--split", "40,10,10",
                 "--out", str(out), *FAST]) == 0
    sizes = [len(dn.read_conll(out / "splits" / f"{p}.conll")) for p in ("train", "dev", "test")]
    assert sizes == [40, 10, 10]


# ---- folder per class; unknown suffixes ---------------------------------------------------------------------------
def _folder(root, n):
    rows = [line.rsplit(",", 1) for line in sentiment_csv(root.parent / "src.csv", n, 3).read_text().splitlines()[1:]]
    for i, (text, label) in enumerate(rows):
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / f"{i:03d}.txt").write_text(f"  {text}\n\n", encoding="utf-8")
    return rows


def test_folder_per_class_reader(tmp_path):
    rows = _folder(tmp_path / "reviews", 30)
    examples = dc.read_examples(tmp_path / "reviews")
    assert sorted((e.text, e.label) for e in examples) == sorted((t, l) for t, l in rows)
    assert dc.label_vocab(examples) == ["neg", "pos"] and examples[0].source.endswith(".txt")
    (tmp_path / "reviews" / "pos" / "notes.md").write_text("x")
    with pytest.raises(DataError, match=r"notes.md: label folder 'pos' holds 'notes.md'; it may hold only .txt"):
        dc.read_examples(tmp_path / "reviews")
    (tmp_path / "reviews" / "pos" / "notes.md").unlink()
    (tmp_path / "reviews" / "neg" / "empty.txt").write_text(" \n")
    with pytest.raises(DataError, match=r"empty.txt:1: empty example file"):
        dc.read_examples(tmp_path / "reviews")
    with pytest.raises(DataError, match="one sub-folder per label"):
        dc.read_examples(tmp_path / "reviews" / "pos")


def test_classify_cli_trains_from_a_folder_per_class(tiny_ckpt, tmp_path):
    _folder(tmp_path / "reviews", 40)
    out = tmp_path / "out"
    assert main(["finetune", "classify", "--model", str(tiny_ckpt), "--data", str(tmp_path / "reviews"),
                 "--split", "0.6,0.2,0.2", "--out", str(out), *FAST]) == 0
    assert json.loads((out / "seed-1" / "bertforge_task.json").read_text())["labels"] == ["neg", "pos"]
    assert len(dc.read_examples(out / "splits" / "train.jsonl")) == 24


@pytest.mark.parametrize("name", ["reviews.txt", "reviews.dat", "reviews"])
def test_unknown_suffix_is_refused_in_one_line(tiny_ckpt, tmp_path, capsys, name):
    data = tmp_path / name
    data.write_text("good movie\tpos\nbad movie\tneg\n", encoding="utf-8")
    assert main(["finetune", "classify", "--model", str(tiny_ckpt), "--data", str(data), "--out",
                 str(tmp_path / "out"), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {data}: cannot tell the format from the suffix" in err
    assert "--format csv|tsv|jsonl|parquet|arrow, or a folder DIR/<label>/*.txt" in err


def test_predict_refuses_an_unknown_suffix_without_offering_a_folder(tmp_path):
    with pytest.raises(DataError, match=r"suffix '.txt': pass --format csv\|tsv\|jsonl\|parquet\|arrow$"):
        list(dc.iter_examples(tmp_path / "in.txt", label_column=None))
