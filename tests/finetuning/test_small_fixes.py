"""The small ones. Kinds and the variants covered:

- --split counts exact: 20,5,5 of 32 rows (classify), fractions of a set whose per-label rounding overshoots; a
  tiny set that would leave dev or test empty is refused naming the part (counts and fractions)
- macro-F1: classes absent from both gold and predictions are not averaged in (scikit-learn's labels=None, compared
  with sklearn.metrics.f1_score and a hand computation); a class only predicted counts with F1 0
- CSV: a header lacking the text column named at the header's line (also after blank lines); an unterminated quote
  and a stray quote closing mid-cell refused (no merged records); a legitimate multi-line quoted cell still read
- finetune mlm reads JSONL corpora by --text-column
- readers: unknown suffixes (.csv, .xml, none) refused naming the file; .gz of a known suffix still read
- --short-seq-prob with --objective mlm refused; the default accepted
- a confusion matrix over more than 12 labels is summarised as its most confused pairs (small ones printed whole)
- predict / evaluate with --max-seq-length above the model's positions: one line, before any work
- predict / evaluate writing to a path that is a folder (--out, --predictions): one line naming the flag and the
  path, before the model is loaded
- a model folder that does not exist (finetune --model, predict / evaluate MODEL_DIR, export CHECKPOINT): one line
  naming the flag and the path, not its missing config.json
- a missing finetuning input file (--train / --dev / --test / --data): one line naming it, before the process group
  starts and before the output folder is made
"""
import json

import pytest

from bertforge.errors import ConfigError, DataError
from bertforge.finetuning import data_classify as dc
from bertforge.finetuning.metrics import classification_metrics, format_report


def ex(label, i):
    return dc.Example(f"text {label} {i}", None, label, "f", i)


def test_split_counts_exact():
    examples = [ex("a", i) for i in range(17)] + [ex("b", i) for i in range(9)] + [ex("c", i) for i in range(6)]
    parts = dc.split_examples(examples, [20, 5, 5], seed=0)
    assert [len(p) for p in parts] == [20, 5, 5]
    parts = dc.split_examples(examples, [0.5, 0.25, 0.25], seed=1)
    assert [len(p) for p in parts] == [16, 8, 8]
    assert {e.label for e in parts[0]} == {"a", "b", "c"}


@pytest.mark.parametrize("sizes,part", [([0.8, 0.1, 0.1], "dev"), ([3, 2, 0.5], "test")])
def test_tiny_split_leaves_no_part_empty(sizes, part):
    examples = [ex("a", i) for i in range(3)] + [ex("b", i) for i in range(2)]
    with pytest.raises(ConfigError, match=rf"5 examples leave the {part} part empty"):
        dc.split_examples(examples, sizes, seed=0)


def test_macro_f1_labels_none_convention():
    labels = ["a", "b", "c", "d"]  # d occurs in neither gold nor predictions, c only in predictions
    gold = [0, 0, 1, 1, 1]
    pred = [0, 1, 1, 1, 2]
    m = classification_metrics(gold, pred, labels)
    # by hand: a: p 1, r 1/2, f 2/3; b: p 2/3, r 2/3, f 2/3; c: p 0, f 0 -> (2/3 + 2/3 + 0) / 3
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    sklearn = pytest.importorskip("sklearn.metrics")
    assert m["macro_f1"] == pytest.approx(sklearn.f1_score(gold, pred, average="macro", zero_division=0))


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_csv_header_error_names_header_line(tmp_path):
    with pytest.raises(DataError, match=r"a.csv:1: no column 'text' in the header \(columns: body, label\)"):
        dc.read_examples(write(tmp_path, "a.csv", "body,label\nfine,pos\n"))
    with pytest.raises(DataError, match=r"b.csv:3: no column 'text'"):
        dc.read_examples(write(tmp_path, "b.csv", "\n\nbody,label\nfine,pos\n"))


@pytest.mark.parametrize("text,line", [
    ('text,label\n"great film,pos\nbad film,neg\n', 2),           # unterminated: runs to the end of the file
    ('text,label\n"great film,pos\n"bad film",neg\n', 2),         # closed by the next record's opening quote
    ('text,label\nok,pos\n"say "hi" there",neg\n', 3),           # inner quotes not doubled
])
def test_csv_bad_quotes_refused(tmp_path, text, line):
    with pytest.raises(DataError, match=rf"c.csv:{line}: malformed CSV in the record that starts here"):
        dc.read_examples(write(tmp_path, "c.csv", text))


def test_csv_multiline_cell_still_read(tmp_path):
    got = dc.read_examples(write(tmp_path, "d.csv", 'text,label\n"two\nlines",pos\nnext,neg\n'))
    assert [(e.text, e.label, e.line) for e in got] == [("two\nlines", "pos", 2), ("next", "neg", 4)]


def test_mlm_text_column(tmp_path):
    from bertforge.finetuning.run import read_corpus

    p = write(tmp_path, "c.jsonl", json.dumps({"body": "some domain text"}) + "\n")
    assert read_corpus([str(p)], None, "body") == ["some domain text"]


@pytest.mark.parametrize("name", ["x.csv", "x.xml", "noext"])
def test_unknown_suffix_refused(tmp_path, name):
    from bertforge.data.readers import read_documents

    with pytest.raises(DataError, match=rf"{name}: cannot tell the format from the suffix"):
        list(read_documents([write(tmp_path, name, "text\n")]))


def test_gz_of_known_suffix_read(tmp_path):
    import gzip

    from bertforge.data.readers import read_documents

    p = tmp_path / "x.txt.gz"
    p.write_bytes(gzip.compress(b"hello world\n"))
    assert [d.text.strip() for d in read_documents([p])] == ["hello world"]


def test_short_seq_prob_with_mlm():
    from bertforge.config.pretrain import ObjectiveSection

    with pytest.raises(ConfigError, match="--short-seq-prob 0.3 has no effect with --objective mlm"):
        ObjectiveSection(objective="mlm", short_seq_prob=0.3)
    ObjectiveSection(objective="mlm")
    ObjectiveSection(objective="mlm+nsp", short_seq_prob=0.3)


def test_wide_confusion_summarised():
    labels = [f"T{i}" for i in range(100)]
    gold = [i % 100 for i in range(400)]
    pred = [(g + 1) % 100 if g in (3, 7) else g for g in gold]
    report = format_report(classification_metrics(gold, pred, labels))
    lines = report.splitlines()
    assert len(lines) == 2 + 100 + 1
    assert "T3 -> T4: 4" in lines[-1] and "T7 -> T8: 4" in lines[-1] and "100 labels" in lines[-1]
    small = format_report(classification_metrics([0, 1], [1, 1], ["x", "y"]))
    assert "confusion (rows gold, columns predicted): x y" in small


def test_predict_length_above_positions_one_line(tiny_ckpt, tmp_path, capsys):
    from bertforge.cli import main

    inp = write(tmp_path, "in.csv", "text\nhello\n")
    for command in ("predict", "evaluate"):
        assert main([command, str(tiny_ckpt), str(inp), "--max-seq-length", "512"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"bertforge {command}: error: --max-seq-length 512 exceeds the model's 64 positions") \
            and err.count("\n") == 1


def test_output_path_that_is_a_folder_refused_before_the_model(tiny_ckpt, tmp_path, capsys, monkeypatch):
    from bertforge.cli import main
    from bertforge.finetuning import predict

    monkeypatch.setattr(predict, "load_finetuned", lambda *a, **k: pytest.fail("the model was loaded"))
    inp = write(tmp_path, "in.csv", "text,label\nhello,a\n")
    cases = [(["predict", "--out", str(tmp_path)], "--out", "predictions.jsonl"),
             (["evaluate", "--out", str(tmp_path)], "--out", "metrics.json"),
             (["evaluate", "--predictions", str(tmp_path)], "--predictions", "predictions.jsonl")]
    for (command, *flags), flag, example in cases:
        assert main([command, str(tiny_ckpt), str(inp), *flags]) == 2
        err = capsys.readouterr().err
        assert err == (f"bertforge {command}: error: {flag} {tmp_path}: is a folder; give the path of a file to write, e.g. "
                       f"{tmp_path / example}\n")
    new = f"{tmp_path / 'new'}/"  # written as a folder that does not exist yet: not made a file of that name
    assert main(["predict", str(tiny_ckpt), str(inp), "--out", new]) == 2
    assert capsys.readouterr().err.startswith(f"bertforge predict: error: --out {new}: is a folder; ")
    assert not (tmp_path / "new").exists()


def test_run_folders_given_for_a_model_name_the_model_to_give(tmp_path, capsys):
    """predict / evaluate on a finetuning run's folder point to its seed-N model; on a pretraining run, to
    finetuning it first; one line each, before any model is read."""
    from bertforge.cli import main

    inp = write(tmp_path, "in.csv", "text,label\nhello,a\n")
    run = tmp_path / "ft"
    (run / "seed-1").mkdir(parents=True)
    (run / "seed-1" / "config.json").write_text("{}")
    (run / "summary.json").write_text("{}")
    assert main(["predict", str(run), str(inp)]) == 2
    err = capsys.readouterr().err
    assert err == f"bertforge predict: error: {run}: a finetuning run's folder; give one of its exported models, e.g. " \
                  f"{run / 'seed-1'}\n"
    pre = tmp_path / "pre"
    (pre / "checkpoints").mkdir(parents=True)
    (pre / "config.json").write_text("{}")
    assert main(["evaluate", str(pre), str(inp)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bertforge evaluate: error: {pre}: a pretraining run, which has no classifier; finetune it "
                          f"first") and err.count("\n") == 1, err


def test_missing_model_folder_named_as_such(tmp_path, capsys):
    from bertforge.cli import main

    inp = write(tmp_path, "in.csv", "text,label\nhello,a\n")
    nope = tmp_path / "no" / "such"
    cases = [(["finetune", "classify", "--model", str(nope), "--out", str(tmp_path / "o"), "--train", str(inp)],
              "--model"),
             (["predict", str(nope), str(inp)], "MODEL_DIR"), (["evaluate", str(nope), str(inp)], "MODEL_DIR"),
             (["export", str(nope), str(tmp_path / "hf")], "CHECKPOINT")]
    for argv, flag in cases:
        prog = " ".join(["bertforge", *argv[:2 if argv[0] == "finetune" else 1]])
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"{prog}: error: {flag} {nope}: no such folder; give ") and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("task,flags", [("ner", ["--data"]), ("ner", ["--train"]), ("classify", ["--data"]),
                                        ("classify", ["--train"])])
def test_missing_input_file_refused_before_the_process_group(tmp_path, capsys, monkeypatch, task, flags):
    """A missing training / dev / test / --data file: one line naming it, before the process group starts (whose
    first start compiles DeepSpeed's CPU communication op, ~1 min) and before the output folder is made."""
    from bertforge.cli import main
    from bertforge.finetuning import run

    monkeypatch.setattr(run, "start", lambda *a, **k: pytest.fail("the process group was started"))
    missing = tmp_path / "nonexistent.txt"
    out = tmp_path / "out"
    args = ["finetune", task, *flags, str(missing), "--out", str(out), "--model", "tiny"]
    if flags == ["--train"]:
        args += ["--dev", str(missing)]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err and "file not found" in err, err
    assert not out.exists()
