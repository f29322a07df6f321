"""`predict` / `evaluate --label-names`: integer label ids in the input (the Hugging Face datasets layout) mapped to
names consistently with the model's id2label. Variants covered: classification JSONL `"label": 1` and CSV digit
cells with the dataset's names in another order than the model's (evaluate gives the metrics of the same file
written with names; predict adds label_id, the prediction's id in the input's list); token classification JSONL
`"ner_tags": [...]` with names in another order (the same metrics as named tags; predict's tag_ids name the tags
predicted); names from a file (one a line); BIOES names for an IOB2 model (the same entity types: accepted).
Refused in one line: fewer names than the model's labels, a name the model does not know (classify, ner), other
entity types (bioes); an id out of range (file and line); integer tags without --label-names (file and line);
integer gold labels without --label-names get a hint in evaluate's warning. The models are untrained exports (the
mapping, not the accuracy, is under test)."""
from __future__ import annotations

import json
import re

import pytest
import torch

from bertforge.cli import main
from bertforge.finetuning.tasks import TASK_FILE, ClassifyTask, NerTask

SENTENCES = [["john", "visited", "london", "today"], ["mary", "met", "john", "in", "paris"],
             ["the", "food", "was", "good"]]
TAGS = [["B-PER", "O", "B-LOC", "O"], ["B-PER", "O", "B-PER", "O", "B-LOC"], ["O", "O", "O", "O"]]
NER_LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]  # the model's id2label order
DATASET_TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]  # the dataset's (conll2003's order)


def _export(tiny_ckpt, out, task):
    from bertforge.hf import export_hf, read_config

    torch.manual_seed(0)
    model = task.build_model(read_config(tiny_ckpt))
    return export_hf(model, out, tiny_ckpt, id2label=dict(enumerate(task.labels)), max_length=32,
                     extra_files={TASK_FILE: json.dumps(task.info())})


@pytest.fixture(scope="module")
def models(tiny_ckpt, tmp_path_factory):
    d = tmp_path_factory.mktemp("label_names")
    return {"classify": _export(tiny_ckpt, d / "classify", ClassifyTask(["neg", "pos"], 32)),
            "ner": _export(tiny_ckpt, d / "ner", NerTask(NER_LABELS, 32))}


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def _one_line_error(capsys, argv) -> str:
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    errors = [x for x in err.splitlines() if re.match(r"bertforge (finetune \w+|predict|evaluate): error: ", x)]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_classify_ids_map_like_names(models, tmp_path, capsys):
    texts = [("good movie", "pos"), ("awful food", "neg"), ("love it", "pos"), ("meh service", "neg")]
    names = ["pos", "neg"]  # the dataset's ids: 0 = pos, 1 = neg (the model's id2label: 0 = neg)
    named = _jsonl(tmp_path / "named.jsonl", [{"text": t, "label": l} for t, l in texts])
    ids = _jsonl(tmp_path / "ids.jsonl", [{"text": t, "label": names.index(l)} for t, l in texts])
    csv = tmp_path / "ids.csv"
    csv.write_text("text,label\n" + "".join(f"{t},{names.index(l)}\n" for t, l in texts), encoding="utf-8")
    model = str(models["classify"])
    assert main(["evaluate", model, str(named), "--out", str(tmp_path / "a.json"), "--no-progress"]) == 0
    for src, tag in ((ids, "b"), (csv, "c")):
        assert main(["evaluate", model, str(src), "--label-names", "pos,neg", "--out", str(tmp_path / f"{tag}.json"),
                     "--predictions", str(tmp_path / f"{tag}.jsonl"), "--no-progress"]) == 0
        assert json.loads((tmp_path / f"{tag}.json").read_text()) == json.loads((tmp_path / "a.json").read_text())
        assert [r["gold"] for r in _rows(tmp_path / f"{tag}.jsonl")] == [l for _, l in texts]
    assert main(["predict", model, str(ids), "--label-names", "pos,neg", "--out", str(tmp_path / "p.jsonl"),
                 "--no-progress"]) == 0
    rows = _rows(tmp_path / "p.jsonl")
    assert len(rows) == 4 and all(names[r["label_id"]] == r["label"] for r in rows)
    capsys.readouterr()
    assert main(["evaluate", model, str(ids), "--no-progress"]) == 0  # ids read as names: warned, with the hint
    assert "gold label '0' is not one the model knows" in capsys.readouterr().out
    err = _one_line_error(capsys, ["evaluate", model, str(ids), "--label-names", "pos,neutral"])
    assert "--label-names pos,neutral: 'neutral' is not a label of the model" in err and "neg, pos" in err
    err = _one_line_error(capsys, ["evaluate", model, str(ids), "--label-names", "pos"])
    assert "1 names but the model" in err and "has 2 labels (neg, pos)" in err
    bad = _jsonl(tmp_path / "bad.jsonl", [{"text": "good", "label": 0}, {"text": "bad", "label": 2}])
    err = _one_line_error(capsys, ["evaluate", model, str(bad), "--label-names", "pos,neg"])
    assert f"{bad}:2" in err and "label 2 is not an id of the 2 --label-names (0 to 1)" in err


def test_ner_ids_map_like_names(models, tmp_path, capsys):
    named = _jsonl(tmp_path / "named.jsonl", [{"tokens": s, "tags": t} for s, t in zip(SENTENCES, TAGS)])
    ids = _jsonl(tmp_path / "ids.jsonl", [{"tokens": s, "ner_tags": [DATASET_TAGS.index(x) for x in t]}
                                          for s, t in zip(SENTENCES, TAGS)])
    names_file = tmp_path / "names.txt"
    names_file.write_text("\n".join(DATASET_TAGS) + "\n", encoding="utf-8")
    model = str(models["ner"])
    assert main(["evaluate", model, str(named), "--out", str(tmp_path / "a.json"), "--no-progress"]) == 0
    assert main(["evaluate", model, str(ids), "--label-names", str(names_file), "--out", str(tmp_path / "b.json"),
                 "--no-progress"]) == 0
    assert json.loads((tmp_path / "b.json").read_text()) == json.loads((tmp_path / "a.json").read_text())
    assert main(["predict", model, str(ids), "--label-names", ",".join(DATASET_TAGS), "--out",
                 str(tmp_path / "p.jsonl"), "--no-progress"]) == 0
    rows = _rows(tmp_path / "p.jsonl")
    assert len(rows) == 3 and all([DATASET_TAGS[i] for i in r["tag_ids"]] == r["tags"] for r in rows)
    bioes = "O,B-PER,I-PER,E-PER,S-PER,B-LOC,I-LOC,E-LOC,S-LOC"  # another scheme, the same entity types
    assert main(["predict", model, str(named), "--scheme", "bioes", "--label-names", bioes, "--out",
                 str(tmp_path / "q.jsonl"), "--no-progress"]) == 0
    assert all([bioes.split(",")[i] for i in r["tag_ids"]] == r["tags"] for r in _rows(tmp_path / "q.jsonl"))
    capsys.readouterr()
    err = _one_line_error(capsys, ["evaluate", model, str(ids), "--label-names", "O,B-PER,I-PER"])
    assert "3 names but the model" in err and "has 5 labels" in err
    err = _one_line_error(capsys, ["evaluate", model, str(ids), "--label-names", "O,B-PER,I-PER,B-ORG,I-ORG"])
    assert "'B-ORG' is not a label of the model" in err
    err = _one_line_error(capsys, ["evaluate", model, str(ids), "--scheme", "bioes", "--label-names",
                                   "O,B-PER,I-PER,E-PER,S-PER"])
    assert "1 entity types are not the 2 of the model" in err
    err = _one_line_error(capsys, ["evaluate", model, str(ids)])
    assert f"{ids}:1" in err and "integer id" in err and "--label-names" in err
