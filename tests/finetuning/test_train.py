"""End to end on a tiny model: finetune (classify, ner) through the CLI, best checkpoint, seeds summary,
predict / evaluate, and Hugging Face `pipeline` parity of the exported models."""
import json
import random

import pytest
import torch

from bertforge.cli import main
from bertforge.finetuning.metrics import entity_metrics
from tests.finetuning._data import ner_conll as _ner_conll
from tests.finetuning._data import sentiment_csv as _sentiment_csv


FAST = ["--threads", "1", "--no-progress", "--global-batch", "8", "--lr", "3e-3", "--max-seq-length", "32",
        "--recipe", "lecture"]


@pytest.fixture(scope="module")
def classify_run(tiny_ckpt, tmp_path_factory):
    d = tmp_path_factory.mktemp("cls")
    train, dev = _sentiment_csv(d / "train.csv", 120, 0), _sentiment_csv(d / "dev.csv", 40, 1)
    test = _sentiment_csv(d / "test.csv", 40, 2)
    rc = main(["finetune", "classify", "--model", str(tiny_ckpt), "--train", str(train), "--dev", str(dev),
               "--test", str(test), "--epochs", "10", "--dropout", "0", "--seeds", "1,2", "--out", str(d / "out"), *FAST])
    assert rc == 0
    return d


def test_classify_learns_and_summarises_seeds(classify_run):
    summary = json.loads((classify_run / "out" / "summary.json").read_text())
    assert summary["seeds"] == [1, 2] and len(summary["runs"]) == 2
    assert summary["test"]["accuracy"]["mean"] > 0.9
    accs = [r["test"]["accuracy"] for r in summary["runs"]]
    assert summary["test"]["accuracy"]["std"] == pytest.approx(torch.tensor(accs).std().item(), abs=1e-9)
    for run in summary["runs"]:  # the exported model is the best dev state
        assert run["dev"]["accuracy"] == max(h["accuracy"] for h in run["dev_history"])
    lines = [json.loads(l) for l in (classify_run / "out" / "metrics.jsonl").read_text().splitlines()]
    assert any(l.get("split") == "dev" for l in lines) and any("loss" in l for l in lines)
    task = json.loads((classify_run / "out" / "seed-1" / "bertforge_task.json").read_text())
    assert task["labels"] == ["neg", "pos"] and task["args"]["lr"] == 3e-3


def test_classify_predict_evaluate_and_hf_pipeline(classify_run, capsys):
    model, test = classify_run / "out" / "seed-1", classify_run / "test.csv"
    assert main(["predict", str(model), str(test), "--out", str(classify_run / "pred.jsonl")]) == 0
    rows = [json.loads(l) for l in (classify_run / "pred.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and set(rows[0]["probabilities"]) == {"neg", "pos"}
    assert abs(sum(rows[0]["probabilities"].values()) - 1) < 1e-5
    assert main(["evaluate", str(model), str(test), "--out", str(classify_run / "eval.json")]) == 0
    metrics = json.loads((classify_run / "eval.json").read_text())
    summary = json.loads((classify_run / "out" / "summary.json").read_text())
    assert metrics["accuracy"] == pytest.approx(summary["runs"][0]["test"]["accuracy"])
    assert "confusion" in capsys.readouterr().out
    transformers = pytest.importorskip("transformers")
    pipe = transformers.pipeline("text-classification", model=str(model), device="cpu", top_k=None)
    for row, out in zip(rows, pipe([r["text"] for r in rows], truncation=True, max_length=32)):
        hf = {d["label"]: d["score"] for d in out}
        assert max(hf, key=hf.get) == row["label"]
        for label, p in row["probabilities"].items():
            assert hf[label] == pytest.approx(p, abs=1e-4)


def test_ner_end_to_end_windows_and_hf_pipeline(tiny_ckpt, tmp_path):
    train, dev, test = (_ner_conll(tmp_path / f"{s}.conll", n, i) for i, (s, n) in
                        enumerate([("train", 160), ("dev", 30), ("test", 30)]))
    rc = main(["finetune", "ner", "--model", str(tiny_ckpt), "--train", str(train), "--dev", str(dev), "--test",
               str(test), "--epochs", "6", "--out", str(tmp_path / "out"), *FAST[:-2], "--max-seq-length", "8",
               "--stride", "2"])  # max_seq_length 8: every sentence is split into windows
    assert rc == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["test"]["f1"]["mean"] > 0.8
    model = tmp_path / "out" / "seed-1"
    assert main(["predict", str(model), str(test), "--out", str(tmp_path / "pred.jsonl"), "--scheme", "bioes"]) == 0
    rows = [json.loads(l) for l in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and all(len(r["tags"]) == len(r["tokens"]) for r in rows)
    assert rows[0]["entities"] and {"type", "start", "end", "text", "score"} <= set(rows[0]["entities"][0])
    assert any(t.startswith(("S-", "E-")) for r in rows for t in r["tags"])
    transformers = pytest.importorskip("transformers")
    # parity without windows: a max_seq_length that covers the sentence
    from bertforge.finetuning import data_ner as dn
    from bertforge.finetuning import predict as P

    ft = P.load_finetuned(model, max_seq_length=32)
    sentences = dn.read_conll(test)
    ours = P.ner_rows(P.Runner(ft), sentences)
    pipe = transformers.pipeline("token-classification", model=str(model), device="cpu")
    for sent, row in zip(sentences, ours):
        text = " ".join(sent.tokens)
        starts, pos = [], 0
        for w in sent.tokens:
            starts.append(pos)
            pos += len(w) + 1
        hf = {d["start"]: d["entity"] for d in pipe(text)}  # 'O' is left out by the pipeline
        assert [hf.get(s, "O") for s in starts] == row["tags"]


def _first_layers(minilm, n, out):
    """A checkpoint with the first n layers of the real MiniLM (fast enough for a test)."""
    from bertforge.hf import export_hf, load_pretrained, read_config
    from bertforge.model import BertModel

    full = BertModel(read_config(minilm))
    load_pretrained(minilm, full)
    small = BertModel(read_config(minilm).replace(num_hidden_layers=n))
    small.load_state_dict({k: v for k, v in full.state_dict().items() if k in small.state_dict()})
    return export_hf(small, out, tokenizer_dir=minilm)


def test_ner_metric_equals_seqeval_on_real_predictions(minilm_dir, wnut_file, tmp_path):
    """A MiniLM tagger trained for a few steps on a slice of real WNUT-16: its predictions are messy (I- without B-,
    type switches), exactly what the strict metric must score like seqeval."""
    seqeval = pytest.importorskip("seqeval.metrics")
    from seqeval.scheme import IOB2

    from bertforge.finetuning import data_ner as dn
    from bertforge.finetuning.tasks import NerTask
    from bertforge.config.finetune import FinetuneConfig
    from bertforge.data.tokenizer import load_tokenizer
    from bertforge.finetuning.evaluation import local_outputs
    from bertforge.finetuning.trainer import train_seed
    from bertforge.hf import load_pretrained, read_config

    wnut, minilm = wnut_file, minilm_dir
    sents = dn.read_conll(wnut)
    train, test = sents[:64], sents[96:160]
    labels = dn.tag_vocab(sents)
    label2id = {l: i for i, l in enumerate(labels)}
    tok = load_tokenizer(minilm)
    enc = lambda s: dn.encode(tok, s, 48, label2id)
    task = NerTask(labels, 48, train=enc(train), test=enc(test), sentences={"train": train, "test": test})
    minilm = _first_layers(minilm, 2, tmp_path / "minilm2")
    config = read_config(minilm)
    kw = dict(mode="strict", scheme=IOB2, zero_division=0)
    gold = [s.tags for s in test]
    untrained = task.build_model(config)  # random head: tags all over the place (stray I-, type switches)
    load_pretrained(minilm, untrained)
    args = FinetuneConfig(lr=1e-3, epochs=2, global_batch=16, progress=False)
    trained = train_seed(task, config, minilm, args, 0, None, None, echo=lambda s: None)[1]
    n_pred = []
    for model in (untrained, trained):
        pred, _ = task.tags(task.test, local_outputs(model, task, task.test, 64, torch.device("cpu")), test)
        ours = entity_metrics(gold, pred)
        n_pred.append(ours["n_pred"])
        assert ours["f1"] == seqeval.f1_score(gold, pred, **kw)
        assert ours["precision"] == seqeval.precision_score(gold, pred, **kw)
        assert ours["recall"] == seqeval.recall_score(gold, pred, **kw)
        report = seqeval.classification_report(gold, pred, output_dict=True, **kw)
        for etype, row in ours["per_type"].items():
            assert row["f1"] == pytest.approx(report[etype]["f1-score"], abs=1e-12)
    assert n_pred[0] > 10  # the untrained tagger's predictions contain plenty of (odd) entities


def test_pos_plain_tags_train_and_report_token_accuracy(tiny_ckpt, tmp_path, capsys):
    from tests.finetuning._data import POS, pos_conll

    train, dev, test = (pos_conll(tmp_path / f"{s}.conll", n, i) for i, (s, n) in
                        enumerate([("train", 120), ("dev", 20), ("test", 20)]))
    out = tmp_path / "out"
    assert main(["finetune", "ner", "--scheme", "plain", "--model", str(tiny_ckpt), "--train", str(train), "--dev",
                 str(dev), "--test", str(test), "--epochs", "8", "--dropout", "0", "--out", str(out), *FAST]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "accuracy" and summary["test"]["accuracy"]["mean"] > 0.9
    run = summary["runs"][0]["test"]
    assert set(run["per_class"]) == set(POS.values()) and run["confusion"]["labels"] == sorted(set(POS.values()))
    printed = capsys.readouterr().out
    assert "class / tag" in printed and "VBD" in printed  # the per-tag report
    rows_file = tmp_path / "pred.jsonl"
    assert main(["predict", str(out / "seed-1"), str(test), "--out", str(rows_file)]) == 0
    rows = [json.loads(x) for x in rows_file.read_text().splitlines()]
    assert all(set(r["tags"]) <= set(POS.values()) and "entities" not in r for r in rows)
    assert main(["evaluate", str(out / "seed-1"), str(test), "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["accuracy"] == pytest.approx(run["accuracy"])


def _imbalanced_csv(path, n_pos, n_neg, seed):
    rng = random.Random(seed)
    words = "the movie food service was today a it is".split()
    rows = [f"{' '.join(rng.choices(words, k=5))} {i},{label}" for i, label in
            enumerate(["pos"] * n_pos + ["neg"] * n_neg)]
    rng.shuffle(rows)
    path.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_collapse_to_the_majority_class_is_warned_and_a_learning_model_is_not(tiny_ckpt, tmp_path, capsys):
    # imbalanced, with no signal in the text: the model can only learn the prior
    train, dev = _imbalanced_csv(tmp_path / "train.csv", 36, 4, 0), _imbalanced_csv(tmp_path / "dev.csv", 12, 8, 1)
    assert main(["finetune", "classify", "--model", str(tiny_ckpt), "--train", str(train), "--dev", str(dev),
                 "--epochs", "3", "--out", str(tmp_path / "imb"), *FAST]) == 0
    printed = capsys.readouterr().out
    assert ("warning: the model predicts 'pos' for 100.0% of the dev set (gold share 60.0%): collapsed to the "
            "majority class") in printed
    dev_metrics = json.loads((tmp_path / "imb" / "summary.json").read_text())["runs"][0]["dev"]
    assert dev_metrics["collapsed"] == {"label": "pos", "share": 1.0, "gold_share": 0.6}
    assert dev_metrics["per_class"]["neg"]["recall"] == 0.0 and dev_metrics["confusion"]["matrix"] == [[0, 8],
                                                                                                        [0, 12]]
    # balanced and learnable: no warning
    train, dev = _sentiment_csv(tmp_path / "b_train.csv", 120, 0), _sentiment_csv(tmp_path / "b_dev.csv", 40, 1)
    assert main(["finetune", "classify", "--model", str(tiny_ckpt), "--train", str(train), "--dev", str(dev),
                 "--epochs", "10", "--dropout", "0", "--out", str(tmp_path / "bal"), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "collapsed" not in printed
    summary = json.loads((tmp_path / "bal" / "summary.json").read_text())
    assert summary["runs"][0]["dev"]["collapsed"] is None and summary["dev"]["accuracy"]["mean"] > 0.9


def test_class_weight_balanced_reaches_the_loss(tiny_ckpt, tmp_path):
    """The same imbalanced run with --class-weight balanced: the first step's loss is the weighted one (weights
    40 / (2 x 36) and 40 / (2 x 4)), so it differs from the plain run's while the model and batch are the same."""
    train = _imbalanced_csv(tmp_path / "train.csv", 36, 4, 0)
    first = {}
    for weight in ("none", "balanced"):
        out = tmp_path / weight
        assert main(["finetune", "classify", "--model", str(tiny_ckpt), "--train", str(train), "--epochs", "1",
                     "--class-weight", weight, "--log-every", "1", "--dropout", "0", "--out", str(out), *FAST]) == 0
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        first[weight] = next(x["loss"] for x in lines if x.get("split") == "train")
        info = json.loads((out / "seed-1" / "bertforge_task.json").read_text())
        if weight == "balanced":
            assert info["class_weights"] == pytest.approx([40 / 8, 40 / 72])  # labels sorted: neg, pos
    assert first["balanced"] != pytest.approx(first["none"], rel=1e-3)


def test_class_weight_balanced_does_not_depend_on_the_micro_batch(tiny_ckpt, tmp_path):
    """--class-weight balanced normalises by the whole step's summed label weights: micro batch 8 x accumulation 2
    and micro batch 16 give the same losses and final weights (fp32 summation order only)."""
    from safetensors.torch import load_file

    train = _imbalanced_csv(tmp_path / "train.csv", 36, 12, 0)
    runs = {}
    for micro in (8, 16):
        out = tmp_path / f"m{micro}"
        assert main(["finetune", "classify", "--model", str(tiny_ckpt), "--train", str(train), "--epochs", "2",
                     "--class-weight", "balanced", "--log-every", "1", "--dropout", "0", "--out", str(out), *FAST,
                     "--global-batch", "16", "--micro-batch", str(micro)]) == 0
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        runs[micro] = ([x["loss"] for x in lines if x.get("split") == "train"],
                       load_file(str(out / "seed-1" / "model.safetensors")))
    (a, wa), (b, wb) = runs[8], runs[16]
    assert len(a) == len(b) == 6
    assert a == pytest.approx(b, rel=1e-6, abs=0)  # measured 8.6e-8 relative (per-micro-batch means: 1e-2)
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5  # measured 6e-8 (per-micro-batch: 1.5e-2)


def test_triton_kernels_follow_the_reference(tiny_ckpt, tmp_path):
    """--kernels triton (the Triton interpreter on CPU) trains with the losses of --kernels none."""
    train = _sentiment_csv(tmp_path / "train.csv", 24, 0)
    curves = {}
    for kernels in ("none", "triton"):
        out = tmp_path / kernels
        assert main(["finetune", "classify", "--model", str(tiny_ckpt), "--train", str(train), "--epochs", "1",
                     "--kernels", kernels, "--log-every", "1", "--dropout", "0", "--out", str(out), *FAST]) == 0
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        curves[kernels] = [x["loss"] for x in lines if x.get("split") == "train"]
    assert len(curves["triton"]) == 3
    assert max(abs(a - b) for a, b in zip(curves["none"], curves["triton"])) < 1e-4, curves
