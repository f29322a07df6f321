"""A broken checkpoint directory fails with one clear message naming the file and the key."""
import json

import pytest
import torch
from safetensors.torch import save_file

from bertforge.config import tiny
from bertforge.heads import BertForPreTraining, BertForSequenceClassification
from bertforge.errors import CheckpointError
from bertforge.hf import export_hf, load_pretrained, read_config

CFG = tiny(vocab_size=97, hidden_size=32, num_attention_heads=2, intermediate_size=64, max_position_embeddings=40)


@pytest.fixture()
def checkpoint(tmp_path):
    model = BertForPreTraining(CFG)
    return export_hf(model, tmp_path / "ckpt"), model


def _rewrite(directory, edit):
    from safetensors.torch import load_file

    state = load_file(str(directory / "model.safetensors"))
    edit(state)
    save_file(state, str(directory / "model.safetensors"))


def test_missing_weight_file(checkpoint):
    directory, _ = checkpoint
    (directory / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"ckpt: no weight file"):
        load_pretrained(directory, BertForPreTraining(CFG))


def test_missing_config(checkpoint):
    directory, _ = checkpoint
    (directory / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config.json: missing"):
        read_config(directory)


def test_wrong_shape_names_file_and_key(checkpoint):
    directory, _ = checkpoint

    def edit(state):
        state["bert.encoder.layer.1.intermediate.dense.weight"] = torch.zeros(3, 3)
    _rewrite(directory, edit)
    with pytest.raises(CheckpointError, match=r"model.safetensors: key 'bert.encoder.layer.1.intermediate.dense"
                                              r".weight' has shape \(3, 3\), the model expects \(64, 32\)"):
        load_pretrained(directory, BertForPreTraining(CFG))


def test_unknown_prefix_names_file_and_key(checkpoint):
    directory, _ = checkpoint

    def edit(state):
        for key in list(state):
            state["roberta." + key.removeprefix("bert.")] = state.pop(key)
    _rewrite(directory, edit)
    with pytest.raises(CheckpointError, match=r"model.safetensors: unknown key 'roberta\."):
        load_pretrained(directory, BertForPreTraining(CFG))


def test_missing_encoder_key(checkpoint):
    directory, _ = checkpoint
    _rewrite(directory, lambda s: s.pop("bert.encoder.layer.0.output.LayerNorm.bias"))
    with pytest.raises(CheckpointError, match=r"missing encoder weight 'bert.encoder.layer.0.output.LayerNorm.bias'"):
        load_pretrained(directory, BertForPreTraining(CFG))


def test_legacy_and_prefixless_checkpoints_load(checkpoint, tmp_path):
    directory, model = checkpoint

    def edit(state):  # a BertModel-style, TF-converted checkpoint: no `bert.` prefix, gamma/beta names, no heads
        for key in list(state):
            value = state.pop(key)
            if not key.startswith("bert."):
                continue
            key = key.removeprefix("bert.").replace("LayerNorm.weight", "LayerNorm.gamma")
            state[key.replace("LayerNorm.bias", "LayerNorm.beta")] = value
        state["embeddings.position_ids"] = torch.arange(40)[None]
    _rewrite(directory, edit)
    clf = BertForSequenceClassification(CFG, num_labels=3)
    report = load_pretrained(directory, clf)
    assert report.initialised == ["classifier.weight", "classifier.bias"]
    assert torch.equal(clf.bert.encoder.layer[1].output.LayerNorm.bias, model.bert.encoder.layer[1].output.LayerNorm.bias)


def test_export_is_atomic_on_failure(tmp_path, monkeypatch):
    import bertforge.hf as hf

    model = BertForPreTraining(CFG)
    export_hf(model, tmp_path / "out")
    before = sorted(p.name for p in (tmp_path / "out").iterdir())

    def boom(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        hf.export_hf(model, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before  # old export intact
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary directory left behind
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == ["BertForPreTraining"]
