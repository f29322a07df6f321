"""Finetuning configs: every value check names its flag, every field is a generated flag, the task defaults, and
the library never imports the command line."""
import ast
import dataclasses
from pathlib import Path

import pytest

from bertforge.cli import build_parser, main
from bertforge.config.finetune import (ClassifyConfig, ClassifyData, FinetuneConfig, ParallelConfig, InferenceConfig,
                                    MlmConfig, MlmData, NerConfig, NerData, SplitFiles)
from bertforge.errors import ConfigError, DataError


@pytest.mark.parametrize("cls,values,flag", [
    (FinetuneConfig, {"lr": 0.0}, "--lr"),
    (FinetuneConfig, {"epochs": -1}, "--epochs"),
    (FinetuneConfig, {"global_batch": 0}, "--global-batch"),
    (FinetuneConfig, {"global_batch": 32, "micro_batch": 5}, "--micro-batch"),
    (FinetuneConfig, {"seeds": (1, 1)}, "--seeds"),
    (ParallelConfig, {"precision": "fp8"}, "--precision"),
    (ParallelConfig, {"zero_stage": 4}, "--zero-stage"),
    (ParallelConfig, {"kernels": "cuda"}, "--kernels"),
    (ParallelConfig, {"compile": True, "zero_stage": 3}, "--compile"),
    (ClassifyData, {"class_weight": "inverse"}, "--class-weight"),
    (InferenceConfig, {"model": "m", "input": "i", "precision": "int8"}, "--precision"),
    (FinetuneConfig, {"warmup_ratio": 1.0}, "--warmup-ratio"),
    (FinetuneConfig, {"dropout": 1.0}, "--dropout"),
    (FinetuneConfig, {"max_grad_norm": -0.5}, "--max-grad-norm"),
    (FinetuneConfig, {"max_seq_length": 3}, "--max-seq-length"),
    (FinetuneConfig, {"seeds": ()}, "--seeds"),
    (FinetuneConfig, {"seeds": (1.5,)}, "--seeds"),
    (SplitFiles, {"split": (0.5,)}, "--split"),
    (NerData, {"scheme": "bio"}, "--scheme"),
    (MlmData, {"mlm_probability": 0.0}, "--mlm-probability"),
    (MlmData, {"held_out": 1.0}, "--held-out"),
    (InferenceConfig, {"model": "m", "input": "i", "format": "xml"}, "--format"),
])
def test_bad_values_name_the_flag(cls, values, flag):
    with pytest.raises(ConfigError, match=flag):
        cls(**values)


def test_run_configs_check_across_sections():
    with pytest.raises(ConfigError, match="--out"):
        ClassifyConfig.from_flat({"train": "t.csv"})
    with pytest.raises(ConfigError, match="--train"):
        ClassifyConfig.from_flat({"output_dir": "o"})
    with pytest.raises(ConfigError, match="not both"):
        NerConfig.from_flat({"output_dir": "o", "train": "a", "data_file": "b"})
    for config in (NerConfig, ClassifyConfig):  # counts for both tasks, as the help says
        assert config.from_flat({"output_dir": "o", "data_file": "b", "split": (2000, 500, 1000)})
        with pytest.raises(ConfigError, match="fractions"):
            config.from_flat({"output_dir": "o", "data_file": "b", "split": (0.9, 0.2)})
    with pytest.raises(ConfigError, match="--corpus"):
        MlmConfig.from_flat({"output_dir": "o"})
    with pytest.raises(ConfigError, match="unknown"):
        MlmConfig.from_flat({"output_dir": "o", "corpus": ["c"], "stride": 3})


def _subparser(*names):
    parser = build_parser()
    for name in names:
        parser = next(a for a in parser._actions if a.dest in ("command", "task")).choices[name]
    return parser


@pytest.mark.parametrize("task,config_cls", [("classify", ClassifyConfig), ("ner", NerConfig), ("mlm", MlmConfig)])
def test_every_field_is_a_flag_and_task_defaults_apply(task, config_cls):
    dests = {a.dest for a in _subparser("finetune", task)._actions}
    assert set(config_cls.field_names()) <= dests
    args = _subparser("finetune", task).parse_args(["--out", "o", "--seeds", "1,2", "--max-grad-norm", "0.5",
                                                   *(["--corpus", "c"] if task == "mlm" else ["--data", "d"])])
    from bertforge.commands.flags import given

    config = config_cls.from_flat(given(args, config_cls.field_names()))
    assert config.training.seeds == (1, 2) and config.training.max_grad_norm == 0.5
    assert config.training.lr == FinetuneConfig.lr  # not given: the dataclass default
    assert config.training.max_seq_length == (128 if task == "mlm" else 512)


SHARED_WITH_PRETRAIN = ["--micro-batch", "--global-batch", "--precision", "--zero-stage", "--kernels", "--unpadded",
                        "--compile", "--max-grad-norm", "--resume", "--activation-checkpointing", "--deepspeed-config",
                        "--dist-timeout-s", "--max-seq-length", "--lr", "--warmup-ratio", "--weight-decay",
                        "--log-every", "--save-every", "--no-progress"]


@pytest.mark.parametrize("task", ["classify", "ner", "mlm"])
def test_finetune_flags_are_pretraining_names(task):
    pretrain = {o for a in _subparser("pretrain")._actions for o in a.option_strings}
    finetune = {o for a in _subparser("finetune", task)._actions for o in a.option_strings}
    assert set(SHARED_WITH_PRETRAIN) <= pretrain & finetune
    args = _subparser("finetune", task).parse_args([
        "--out", "o", "--micro-batch", "4", "--global-batch", "16", "--precision", "bf16", "--zero-stage", "2",
        "--kernels", "triton", "--no-unpadded", "--compile", "--resume",
        *(["--corpus", "c"] if task == "mlm" else ["--data", "d"])])
    from bertforge.commands.flags import given

    cls = {"classify": ClassifyConfig, "ner": NerConfig, "mlm": MlmConfig}[task]
    config = cls.from_flat(given(args, cls.field_names()))
    assert (config.training.micro_batch, config.training.global_batch, config.training.unpadded) == (4, 16, False)
    assert (config.parallel.precision, config.parallel.zero_stage, config.parallel.kernels) == ("bf16", 2, "triton")
    assert config.parallel.compile and config.training.resume
    assert config.training.grad_accum(2) == 2 and config.training.micro_batch_for(2) == 4
    with pytest.raises(ConfigError, match="--micro-batch"):
        config.training.grad_accum(3)
    assert FinetuneConfig(global_batch=32).micro_batch_for(4) == 8  # unset: global / ranks, no accumulation


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_inference_flags(command):
    dests = {a.dest for a in _subparser(command)._actions}
    fields = {f.name for f in dataclasses.fields(InferenceConfig)}
    assert fields - dests <= {"predictions", "label_column"} and (command == "predict" or fields <= dests)


def test_cli_errors_are_one_line(tiny_ckpt, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine,pos\n,neg\n", encoding="utf-8")
    flags = ["finetune", "classify", "--model", str(tiny_ckpt), "--train", str(bad), "--out", str(tmp_path / "o")]
    assert main([*flags, "--max-seq-length", "32"]) == 2
    assert capsys.readouterr().err == f"bertforge finetune classify: error: {bad}:3: empty 'text'\n"
    assert main(flags) == 2  # the default 512 is longer than the tiny model's positions
    err = capsys.readouterr().err
    assert err.startswith("bertforge finetune classify: error: --max-seq-length 512 exceeds the model's 64 positions (")
    assert err.count("\n") == 1
    from bertforge.finetuning.run import run_classify

    with pytest.raises(DataError) as err:
        run_classify(ClassifyConfig.from_flat(train=str(bad), output_dir=str(tmp_path / "o"), model=str(tiny_ckpt),
                                              max_seq_length=32))
    assert (err.value.path, err.value.line) == (str(bad), 3)


def test_library_never_imports_the_command_line():
    root = Path(__file__).resolve().parents[2]
    paths = sorted((root / "engine" / "finetuning").glob("*.py"))
    assert len(paths) > 5, "engine/finetuning/ not found: the check would check nothing"
    for path in paths + [root / "engine" / "config" / "finetune.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(("bertforge.cli", "bertforge.commands")), f"{path.name} imports {name}"
                if path.name == "finetune.py":
                    assert not name.startswith(("torch", "bertforge.finetuning", "bertforge.data")), path


def test_deepspeed_json_is_folded_in_and_may_not_contradict_a_flag(tmp_path):
    from bertforge.finetuning.run import _merged

    user = tmp_path / "ds.json"
    user.write_text('{"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": 4, '
                    '"zero_allow_untested_optimizer": true}')
    config = ClassifyConfig.from_flat(output_dir="o", train="t.csv", deepspeed_config=str(user), global_batch=16)
    merged, raw = _merged(config, frozenset({"output_dir", "train", "deepspeed_config", "global_batch"}))
    assert (merged.parallel.zero_stage, merged.training.micro_batch, merged.training.global_batch) == (2, 4, 16)
    assert raw["zero_optimization"] == {"stage": 2}
    with pytest.raises(ConfigError, match="zero-stage"):
        _merged(config.replace(zero_stage=3), frozenset({"zero_stage"}))
    bad = tmp_path / "bad.json"
    bad.write_text('{"optimizer": {"type": "Adam"}}')
    with pytest.raises(ConfigError, match="optimizer"):
        _merged(config.replace(deepspeed_config=str(bad)), frozenset())
