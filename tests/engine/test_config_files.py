"""Config files (`--config FILE`, YAML or JSON; a run's RUN/config.json) and `--print-config`: the names of the
flags (bertforge.config.names), flags over the file, file settings explicit for the DeepSpeed-JSON check, and one
line for an unknown key, a bad value or a file that does not parse. Nothing here trains."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bertforge.cli import build_parser, main
from bertforge.config.names import normalize, read_config_file, schema
from bertforge.config.pretrain import PretrainConfig
from bertforge.errors import ConfigError


def _printed(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_yaml_flag_names_converted_like_the_flags(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("data: runs/data\nmax-seq-length: 64\nlr: 1e-3\nbetas: 0.9,0.98\ntokens: 100000\n"
                    "model: [num_hidden_layers=4]\nno_export_hf: true\nphase2_steps: 5\n")
    got = _printed(capsys, ["pretrain", "--config", str(path), "--print-config"])
    assert (got["data_dir"], got["max_seq_length"], got["lr"], got["betas"]) == ("runs/data", 64, 1e-3, [0.9, 0.98])
    assert (got["token_budget"], got["model_overrides"], got["export_hf"]) == (100000, {"num_hidden_layers": 4},
                                                                               False)
    assert got["phase2_steps"] == 5 and got["steps"] == PretrainConfig().batch.steps


def test_flags_override_the_file_and_both_are_explicit(tmp_path, capsys):
    from bertforge.commands.pretrain import config_from_args

    path = tmp_path / "run.json"
    path.write_text(json.dumps({"micro_batch": 8, "global_batch": 32, "lr": 0.01, "model": {"hidden_size": 64,
                                                                                           "num_attention_heads": 2}}))
    argv = ["pretrain", "--config", str(path), "--lr", "0.02", "--model", "num_hidden_layers=1"]
    cfg, explicit, _ = config_from_args(build_parser().parse_args(argv))
    assert (cfg.batch.micro_batch, cfg.optim.lr) == (8, 0.02)
    assert cfg.model.model_overrides == {"hidden_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1}
    assert {"micro_batch", "global_batch", "lr", "model_overrides"} <= explicit and "steps" not in explicit
    from bertforge.deepspeed import merge_user_config

    with pytest.raises(ConfigError, match="train_micro_batch_size_per_gpu|micro-batch=16"):
        merge_user_config(cfg, {"train_micro_batch_size_per_gpu": 16}, set(explicit), 1, source="ds.json")


def test_run_config_json_is_a_config_file(tmp_path, capsys):
    """RUN/config.json (the resolved settings under 'train') repeats the run: --print-config gives them back."""
    cfg = PretrainConfig.from_flat(micro_batch=4, global_batch=8, steps=7, model_overrides={"num_hidden_layers": 1},
                                   betas=(0.9, 0.95), progress=False)
    run = tmp_path / "config.json"
    run.write_text(json.dumps({"train": cfg.to_flat(), "model": {"hidden_size": 128}, "world_size": 2,
                               "grad_accum": 1}))
    got = _printed(capsys, ["pretrain", "--config", str(run), "--print-config"])
    assert PretrainConfig.from_flat(normalize(got, schema("pretrain"), "printed")) == cfg
    again = tmp_path / "again.json"
    again.write_text(json.dumps(got))
    assert _printed(capsys, ["pretrain", "--config", str(again), "--print-config"]) == got


def test_unknown_key_bad_value_and_bad_file_are_one_line(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("max_seq_len: 64\n")
    err = _one_line_error(capsys, ["pretrain", "--config", str(path)])
    assert str(path) in err and "'max_seq_len'" in err and "did you mean max_seq_length" in err
    path.write_text("frobnicate: 1\n")  # no close name: no list of every name, a pointer to --help
    err = _one_line_error(capsys, ["pretrain", "--config", str(path)])
    assert err.endswith("unknown setting 'frobnicate' for `bertforge pretrain`; no close match among its settings "
                        "(they are the flags of `bertforge pretrain --help`)"), err
    path.write_text("steps: ten\n")
    assert f"{path}: steps: expected an integer, got 'ten'" in _one_line_error(capsys, ["pretrain", "--config",
                                                                                      str(path)])
    path.write_text("steps: [1\nlr: 2\n")
    assert f"{path}:2: not valid YAML" in _one_line_error(capsys, ["pretrain", "--config", str(path)])
    bad_json = tmp_path / "run.json"
    bad_json.write_text('{"steps": 1,\n "lr": }')
    assert f"{bad_json}:2: not valid JSON" in _one_line_error(capsys, ["pretrain", "--config", str(bad_json)])
    listed = tmp_path / "list.yaml"
    listed.write_text("- steps\n")
    assert "expected a mapping" in _one_line_error(capsys, ["pretrain", "--config", str(listed)])
    assert "unknown suffix '.toml'" in _one_line_error(capsys, ["pretrain", "--config", str(tmp_path / "x.toml")])


def test_finetune_and_prepare_take_config_files(tmp_path, capsys):
    path = tmp_path / "clf.yaml"
    path.write_text("model: minilm\nout: runs/clf\ndata: reviews.csv\nsplit: [0.7, 0.15, 0.15]\nseeds: 1,2\n"
                    "no_unpadded: true\n")
    got = _printed(capsys, ["finetune", "classify", "--config", str(path), "--epochs", "2", "--print-config"])
    assert (got["output_dir"], got["data_file"], got["split"], got["seeds"]) == ("runs/clf", "reviews.csv",
                                                                                 [0.7, 0.15, 0.15], [1, 2])
    assert (got["unpadded"], got["epochs"]) == (False, 2.0)
    columns = tmp_path / "columns.yaml"
    columns.write_text("text_column: review\n")  # a classify setting, not ner's
    err = _one_line_error(capsys, ["finetune", "ner", "--config", str(columns), "--out", "o", "--train", "t"])
    assert "unknown setting 'text_column' for `bertforge finetune ner`" in err
    prep = tmp_path / "prep.yaml"
    prep.write_text("inputs: [a.txt, b.txt]\ntokenizer: tok\nout: data\nshard_bytes: 64M\n")
    got = _printed(capsys, ["prepare", "--config", str(prep), "--workers", "1", "--print-config"])
    assert (got["inputs"], got["tokenizer"], got["shard_bytes"], got["workers"]) == (["a.txt", "b.txt"], "tok",
                                                                                    64 * 1024 ** 2, 1)
    prep.write_text("tokenizer: tok\n")
    assert "INPUTS, --out required" in _one_line_error(capsys, ["prepare", "--config", str(prep)])


def test_print_config_imports_neither_deepspeed_nor_torch(tmp_path):
    code = ("import sys; from bertforge.cli import main; rc = main(['pretrain', '--steps', '3', '--print-config']); "
            "assert rc == 0; print(sorted(m for m in ('deepspeed', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert json.loads("\n".join(out.stdout.strip().splitlines()[:-1]))["steps"] == 3


def test_read_config_file_empty_and_missing(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert read_config_file(empty) == {}
    with pytest.raises(ConfigError, match="cannot read it"):
        read_config_file(tmp_path / "missing.yaml")


def test_tokenizer_train_from_a_config_file(tmp_path, capsys):
    """The data commands run from a config file: tokenizer train (INPUTS and --out in the file, a flag over it)."""
    from bertforge.data.tokenizer import load_tokenizer

    corpus = Path(__file__).resolve().parents[1] / "fixtures" / "accents_corpus.txt"  # 219 tokens at most
    path = tmp_path / "tok.yaml"
    path.write_text(f"inputs: [{corpus}]\nout: {tmp_path / 'tok'}\nvocab-size: 5000\nmin_frequency: 1\n")
    assert main(["tokenizer", "train", "--config", str(path), "--vocab-size", "60"]) == 0
    assert load_tokenizer(tmp_path / "tok").get_vocab_size() == 60
    path.write_text("vocab_size: 100\n")
    assert "INPUTS, --out required" in _one_line_error(capsys, ["tokenizer", "train", "--config", str(path)])


def test_a_run_prints_its_config_and_repeats_from_run_config_json(tmp_path, capsys):
    """A pretraining run from a config file prints the resolved config first (rank 0, stdout); its RUN/config.json
    fed back (another output folder) resolves to the same settings; `threads` is set for the run as finetuning
    sets it."""
    import torch

    before = torch.get_num_threads()
    threads = before + 1
    path = tmp_path / "tiny.yaml"
    path.write_text(f"threads: {threads}\nsynthetic_vocab: 64\nmodel: {{hidden_size: 32, num_attention_heads: 2, "
                    f"intermediate_size: 64, num_hidden_layers: 1}}\nmax-seq-length: 32\nmicro_batch: 4\nglobal_batch: 4\neval_samples: 4\n"
                    f"no_progress: true\nno_export_hf: true\noutput_dir: {tmp_path / 'run'}\n")
    try:
        assert main(["pretrain", "--config", str(path), "--steps", "1"]) == 0
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("bertforge pretrain: config {")
    printed = json.loads(first.split("config ", 1)[1])
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert printed == saved and saved["steps"] == 1 and saved["model_overrides"]["hidden_size"] == 32
    assert saved["threads"] == threads
    again = _printed(capsys, ["pretrain", "--config", str(tmp_path / "run" / "config.json"), "--output-dir",
                              str(tmp_path / "again"), "--print-config"])
    assert again == {**saved, "output_dir": str(tmp_path / "again")}


def test_a_bad_value_from_the_file_names_the_file_line_and_key(tmp_path, capsys):
    """A value that parses but fails its check (eval_samples 0, lr -1) names the file, its line and the key as
    written when it came from the file; a flag given over the file is blamed on the flag alone."""
    path = tmp_path / "run.yaml"
    path.write_text("steps: 10\n# evaluation\neval-samples: 0\n")
    err = _one_line_error(capsys, ["pretrain", "--config", str(path)])
    assert err.endswith(f"{path}:3: eval-samples: --eval-samples must be a positive integer, got 0"), err
    err = _one_line_error(capsys, ["pretrain", "--config", str(path), "--eval-samples", "-2"])
    assert str(path) not in err and "--eval-samples must be a positive integer, got -2" in err, err
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"epochs": 2, "lr": -1.0}, indent=1))
    err = _one_line_error(capsys, ["finetune", "classify", "--config", str(run), "--train", "t.csv"])
    assert f"{run}:3: lr: --lr" in err, err
