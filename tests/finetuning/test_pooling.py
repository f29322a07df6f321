"""`finetune classify --pooling mean`: the mean of the real tokens' states feeds the classifier (no pooler); padding
never enters it (padded = unpadded = padded with extra columns), the choice is saved with the model and `predict` /
`evaluate` use it, and the Hugging Face folder says that transformers' BertForSequenceClassification would not
reproduce it (its README.md recipe does, checked here)."""
from __future__ import annotations

import json

import pytest
import torch

from bertforge.cli import main
from bertforge.config.model import tiny
from bertforge.finetuning.predict import load_finetuned
from bertforge.heads import BertForSequenceClassification, mean_states
from tests.finetuning._data import sentiment_csv

FAST = ["--threads", "1", "--no-progress", "--global-batch", "8", "--lr", "3e-3", "--max-seq-length", "32",
        "--epochs", "10", "--dropout", "0", "--recipe", "lecture"]


def test_mean_states_ignore_padding_in_both_layouts():
    torch.manual_seed(0)
    lengths = [5, 1, 7]
    states = [torch.randn(n, 6) for n in lengths]
    want = torch.stack([s.mean(0) for s in states])
    padded = torch.full((3, 9, 6), 1e4)  # padding that would dominate any mean it entered
    mask = torch.zeros(3, 9, dtype=torch.long)
    for i, s in enumerate(states):
        padded[i, : len(s)], mask[i, : len(s)] = s, 1
    cu = torch.tensor([0, 5, 6, 13], dtype=torch.int32)
    torch.testing.assert_close(mean_states(padded, mask), want)
    torch.testing.assert_close(mean_states(torch.cat(states), cu_seqlens=cu), want)


def test_mean_pooled_classifier_gives_the_same_logits_padded_unpadded_and_with_extra_padding():
    config = tiny(hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=50,
                  max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(1)
    model = BertForSequenceClassification(config, 3, pooling="mean").eval()
    assert model.bert.pooler is None
    seqs = [torch.randint(5, 50, (n,)) for n in (7, 3, 11)]

    def padded(width):
        ids = torch.zeros(3, width, dtype=torch.long)
        mask = torch.zeros(3, width, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)], mask[i, : len(s)] = s, 1
        return model(ids, attention_mask=mask).logits

    with torch.no_grad():
        tight, wide = padded(11), padded(29)
        cu = torch.tensor([0, 7, 10, 21], dtype=torch.int32)
        flat = model(torch.cat(seqs), cu_seqlens=cu, max_seqlen=11).logits
        alone = torch.cat([model(s[None]).logits for s in seqs])
    torch.testing.assert_close(wide, tight, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flat, tight, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone, tight, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def mean_model(tiny_ckpt, tmp_path_factory):
    d = tmp_path_factory.mktemp("mean_pooling")
    train = sentiment_csv(d / "train.csv", 120, 0)
    dev = sentiment_csv(d / "dev.csv", 40, 1)
    assert main(["finetune", "classify", "--model", str(tiny_ckpt), "--train", str(train), "--dev", str(dev),
                 "--pooling", "mean", "--out", str(d / "out"), *FAST]) == 0
    return d, d / "out" / "seed-1"


def test_mean_pooling_is_saved_and_predict_and_evaluate_use_it(mean_model, capsys):
    d, model_dir = mean_model
    info = json.loads((model_dir / "bertforge_task.json").read_text())
    config = json.loads((model_dir / "config.json").read_text())
    assert info["pooling"] == "mean" and config["classifier_pooling"] == "mean"
    ft = load_finetuned(model_dir)
    assert ft.model.pooling == "mean" and ft.model.bert.pooler is None
    capsys.readouterr()
    assert main(["predict", str(model_dir), str(d / "dev.csv"), "--out", str(d / "preds.jsonl"), "--no-progress",
                 "--threads", "1"]) == 0
    rows = [json.loads(line) for line in (d / "preds.jsonl").read_text().splitlines()]
    assert main(["evaluate", str(model_dir), str(d / "dev.csv"), "--out", str(d / "metrics.json"),
                 "--no-progress", "--threads", "1"]) == 0
    accuracy = json.loads((d / "metrics.json").read_text())["accuracy"]
    dev_accuracy = json.loads((model_dir / "bertforge_task.json").read_text())["result"]["dev"]["accuracy"]
    assert accuracy == pytest.approx(dev_accuracy)  # the model scored at training time, reloaded
    gold = [line.rsplit(",", 1)[1] for line in (d / "dev.csv").read_text().splitlines()[1:]]
    assert accuracy == pytest.approx(sum(r["label"] == g for r, g in zip(rows, gold)) / len(rows))
    assert accuracy > 0.8  # it learned: the pooled vector carries the sentiment word


def test_the_exported_folder_says_how_to_reproduce_mean_pooling(mean_model):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertModel

    d, model_dir = mean_model
    note = (model_dir / "README.md").read_text()
    assert "mean" in note and "BertForSequenceClassification" in note
    assert "pipe = pipeline(" not in note  # the card's first recipe would pool [CLS] through a random pooler
    texts = ["the movie was great today", "awful service", "a film"]
    ft = load_finetuned(model_dir)
    from bertforge.finetuning import data_classify as dc
    from bertforge.finetuning.predict import Runner, classify_rows

    ours = classify_rows(Runner(ft), [dc.Example(t, None, None, "x", i) for i, t in enumerate(texts)])
    encoder = BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval()  # the README's recipe
    weights = load_file(str(model_dir / "model.safetensors"))
    tok = AutoTokenizer.from_pretrained(model_dir)
    batch = tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    logits = ((hidden * mask).sum(1) / mask.sum(1)) @ weights["classifier.weight"].T + weights["classifier.bias"]
    probs = logits.softmax(-1)
    for row, p in zip(ours, probs):
        assert list(row["probabilities"].values()) == pytest.approx(p.tolist(), abs=1e-5)
