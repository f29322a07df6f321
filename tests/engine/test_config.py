import json

import pytest

from bertforge.config import PRESETS, ModelConfig, preset
from bertforge.errors import ConfigError


def test_presets_have_the_documented_shapes():
    assert (preset("tiny").num_hidden_layers, preset("tiny").hidden_size) == (2, 128)
    m = preset("minilm-l6")
    assert (m.num_hidden_layers, m.hidden_size, m.num_attention_heads, m.intermediate_size) == (6, 384, 12, 1536)
    assert preset("bert-base").num_parameters() == pytest.approx(110e6, rel=0.02)
    assert preset("bert-large").num_parameters() == pytest.approx(336e6, rel=0.02)
    assert set(PRESETS) == {"tiny", "minilm-l6", "bert-base", "bert-large"}


def test_num_parameters_counts_the_real_model():
    from bertforge.heads import BertForPreTraining

    cfg = preset("tiny", vocab_size=1000)
    model = BertForPreTraining(cfg)
    assert sum(p.numel() for p in model.parameters()) == cfg.num_parameters()


def test_hf_config_round_trip(tmp_path):
    cfg = preset("minilm-l6", hidden_dropout_prob=0.2)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_hf_config(architectures=["BertModel"], torch_dtype="float32")))
    assert ModelConfig.from_hf_config(path) == cfg


def test_hf_config_matches_transformers_defaults():
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertConfig().to_dict()
    assert ModelConfig.from_hf_config(hf) == preset("bert-base")


@pytest.mark.parametrize("field,value,message", [
    ("hidden_size", 129, "divisible"),
    ("hidden_act", "relu", "hidden_act"),
    ("hidden_dropout_prob", 1.0, r"\[0, 1\)"),
    ("num_hidden_layers", 0, "positive"),
    ("kernels", "cuda", "kernels"),
])
def test_invalid_values_are_refused_naming_the_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        preset("tiny", **{field: value})


def test_unknown_preset_and_field():
    with pytest.raises(ConfigError, match="known presets: tiny"):
        preset("bert-huge")
    with pytest.raises(ConfigError, match="unknown ModelConfig field"):
        preset("tiny", hiden_size=3)


def test_bad_config_json_names_file_and_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{\n "hidden_size": 64,\n oops\n}')
    with pytest.raises(ConfigError, match=r"config.json:3: not valid JSON"):
        ModelConfig.from_hf_config(path)
    path.write_text(json.dumps({"position_embedding_type": "relative_key"}))
    with pytest.raises(ConfigError, match="relative_key"):
        ModelConfig.from_hf_config(path)
