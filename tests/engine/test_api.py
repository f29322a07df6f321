"""The Python API (bertforge/api.py): a light `import bertforge`, names as the flags spell them, unknown names
listing the valid ones, and a notebook session that leaves the process clean."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bertforge
from bertforge.api import _settings
from bertforge.errors import ConfigError

HERE = Path(__file__).resolve().parent
LAUNCHER = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in LAUNCHER}


def test_import_bertforge_loads_no_torch(tmp_path):
    code = ("import sys, bertforge; assert 'torch' not in sys.modules, 'import bertforge loaded torch'; "
            "f = bertforge.pretrain; assert 'torch' not in sys.modules, 'the API attribute loaded torch'; "
            "print(bertforge.__version__, sorted(bertforge.__all__))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pretrain" in out.stdout and "finetune" in out.stdout


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'pretrian'"):
        bertforge.pretrian  # noqa: B018


def test_unknown_name_lists_close_and_valid_names():
    with pytest.raises(ConfigError) as err:
        bertforge.pretrain(max_seq_len=64)
    text = str(err.value)
    assert "bertforge.pretrain()" in text and "'max_seq_len'" in text and "did you mean max_seq_length" in text
    assert "valid names: " in text and "micro_batch" in text and "tokens" in text
    with pytest.raises(ConfigError, match=r"unknown task 'clasify'; give one of classify, ner, mlm"):
        bertforge.finetune("clasify")
    with pytest.raises(ConfigError, match="epochs: expected a number, got 'three'"):
        bertforge.finetune("classify", epochs="three")


def test_flag_names_and_field_names_are_one_setting(tmp_path):
    """`data` (the flag) and `data_dir` (the field) name one setting; a file under keywords; keywords win."""
    values, named = _settings("pretrain", {"data": "d", "max-seq-length": "64"}, {"tokens": 1000}, "call")
    assert values == {"data_dir": "d", "max_seq_length": 64, "token_budget": 1000}
    assert named == {"data_dir", "max_seq_length", "token_budget"}
    values, _ = _settings("pretrain", {"data_dir": "d"}, {}, "call")
    assert values == {"data_dir": "d"}
    path = tmp_path / "run.yaml"
    path.write_text("lr: 1e-3\nmodel: {num_hidden_layers: 2}\n")
    values, _ = _settings("pretrain", path, {"lr": 2e-3, "model": ["hidden_size=64"]}, "call")
    assert values == {"lr": 2e-3, "model_overrides": {"num_hidden_layers": 2, "hidden_size": 64}}
    values, named = _settings("finetune classify", None, {"out": "o", "data": "x.csv", "no_progress": True}, "c")
    assert values == {"output_dir": "o", "data_file": "x.csv", "progress": False}


def test_notebook_session_leaves_the_process_clean(tmp_path):
    """Two pretrain calls (the second in two phases), a failing one, one finetune and one predict in one process (tests/engine/_notebook.py);
    after each the environment is as before, no launcher variable is set and no process group is left."""
    out = subprocess.run([sys.executable, str(HERE / "_notebook.py"), str(tmp_path)], cwd=tmp_path,
                         env={**_clean_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["first"][:2] == ["finished", 2] and "mlm_acc" in result["first"][2]
    assert result["second"] == ["finished", 1, [3, 1], "p2/phase2"] and result["second_lr"] == 5e-4
    assert "missing" in result["failure"] and "no such folder" in result["failure"]
    assert result["finetune"][0] == "finished" and "test" in result["finetune"][1]
    assert result["predictions"] == 32 and result["classes"] == ["neg", "neutral", "pos"]
    assert set(result["labels"]) <= {"neg", "neutral", "pos"}
