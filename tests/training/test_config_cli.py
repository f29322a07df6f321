"""PretrainConfig validation, the DeepSpeed config builder, and the one-line errors of `bertforge pretrain` on bad
input — each raised before any training starts (no run directory is created)."""
from __future__ import annotations

import json

import pytest

from bertforge.config.docs import field_docs
from bertforge.config.pretrain import SECTIONS, PretrainConfig
from bertforge.deepspeed import build_ds_config, merge_user_config
from bertforge.errors import ConfigError


def _ds_config(cfg: PretrainConfig, world: int, user=None) -> dict:
    return build_ds_config(micro_batch=cfg.batch.micro_batch, global_batch=cfg.batch.global_batch,
                           grad_accum=cfg.grad_accum(world), max_grad_norm=cfg.optim.max_grad_norm,
                           zero_stage=cfg.parallel.zero_stage, precision=cfg.parallel.precision, user=user)


def test_every_field_documented():
    import dataclasses

    for cls in (PretrainConfig, *SECTIONS.values()):
        assert {f.name for f in dataclasses.fields(cls)} == set(field_docs(cls)), cls


def test_accumulation_and_budget():
    cfg = PretrainConfig.from_flat(micro_batch=4, global_batch=32, max_seq_length=128,
                                   token_budget=128 * 32 * 10 + 1)
    assert cfg.grad_accum(1) == 8 and cfg.grad_accum(4) == 2 and cfg.total_steps() == 11
    with pytest.raises(ConfigError, match=r"not divisible by --micro-batch \(4\) x ranks \(3\)"):
        cfg.grad_accum(3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(micro_batch=3, global_batch=8), "multiple of --micro-batch"),
    (dict(precision="fp8"), "--precision"),
    (dict(zero_stage=4), "--zero-stage"),
    (dict(optimizer="sgd"), "--optimizer"),
    (dict(steps=0), "--steps"),
    (dict(dropout=1.5), "--dropout"),
    (dict(objective="mlm+mrp"), r"--objective: invalid choice 'mlm\+mrp'; choose from mlm\+nsp, mlm\+sop, mlm"),
    (dict(short_seq_prob=1.5), "--short-seq-prob must lie in"),
])
def test_invalid_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PretrainConfig.from_flat(kwargs)


def test_objective_flags_and_sentence_task(cli):
    from bertforge.commands.pretrain import config_from_args
    from bertforge.cli import build_parser

    args = build_parser().parse_args(["pretrain", "--objective", "mlm+sop", "--short-seq-prob", "0.2",
                                      "--mlm-probability", "0.3"])
    cfg, explicit, _ = config_from_args(args)
    assert (cfg.objective.objective, cfg.objective.short_seq_prob, cfg.masking.mlm_probability) == ("mlm+sop", 0.2,
                                                                                                   0.3)
    assert {"objective", "short_seq_prob"} <= explicit
    assert [PretrainConfig.from_flat(objective=o).objective.sentence_task for o in ("mlm+nsp", "mlm+sop", "mlm")] \
        == ["nsp", "sop", None]
    assert PretrainConfig().objective.objective == "mlm+nsp"  # the lecture's recipe stays the default
    _one_line(*cli("--synthetic-vocab", "512", "--objective", "nsp"), "--objective: invalid choice 'nsp'; choose from")


def test_ds_config_generated_and_user_wins():
    cfg = PretrainConfig.from_flat(micro_batch=4, global_batch=32, precision="bf16", zero_stage=2, max_grad_norm=0.5)
    out = _ds_config(cfg, 2)
    assert out["train_batch_size"] == 32 and out["gradient_accumulation_steps"] == 4
    assert out["bf16"]["enabled"] and not out["fp16"]["enabled"] and out["zero_optimization"]["stage"] == 2
    assert out["gradient_clipping"] == 0.5 and out["zero_allow_untested_optimizer"]
    user = {"zero_optimization": {"stage": 3, "reduce_bucket_size": 123}, "train_micro_batch_size_per_gpu": 8}
    merged = merge_user_config(cfg, user, explicit=set(), world_size=2)
    assert merged.parallel.zero_stage == 3 and merged.batch.micro_batch == 8
    out = _ds_config(merged, 2, user)
    assert out["zero_optimization"] == {**out["zero_optimization"], "stage": 3, "reduce_bucket_size": 123}
    assert out["gradient_accumulation_steps"] == 2
    with pytest.raises(ConfigError, match="sets zero-stage=3 but --zero-stage 2 was given"):
        merge_user_config(cfg, user, explicit={"zero_stage"}, world_size=2)


@pytest.fixture
def cli(monkeypatch, capsys, tmp_path):
    """Run `bertforge pretrain ...` in-process with a clean distributed environment; returns (code, stderr)."""
    from bertforge.cli import main

    import torch.distributed as dist

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    # an earlier in-process run's default group would make these errors see one rank instead of the variables
    monkeypatch.setattr(dist, "is_initialized", lambda: False)

    def run(*args, env=None):
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        code = main(["pretrain", "--output-dir", str(tmp_path / "run"), "--no-progress", *args])
        err = capsys.readouterr().err.strip()
        assert not (tmp_path / "run").exists(), "training started"
        return code, err
    return run


def _one_line(code, err, *needles):
    assert code == 2
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_error_not_a_dataset(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    _one_line(*cli("--data", str(tmp_path / "empty")), "not a prepared dataset", str(tmp_path / "empty"))
    _one_line(*cli("--data", str(tmp_path / "nope")), "no such folder", str(tmp_path / "nope"))


def test_error_vocab_mismatch(cli):
    _one_line(*cli("--synthetic-vocab", "512", "--model", "vocab_size=1000"),
              "vocab_size 1000 does not match the dataset's tokenizer (512 tokens)")


def test_error_tokenizer_mismatch(cli, tmp_path, capsys):
    from bertforge.data.prepare import prepare
    from bertforge.data.tokenizer import train_wordpiece

    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(f"Sentence number {i} is here. And another one {i * 7} follows it. The end {i}."
                                for i in range(60)), encoding="utf-8")
    train_wordpiece([text], tmp_path / "tok_a", vocab_size=120, show_progress=False)
    train_wordpiece([text], tmp_path / "tok_b", vocab_size=90, show_progress=False)
    prepare([text], tmp_path / "tok_a", tmp_path / "data", progress=False)
    capsys.readouterr()  # prepare's closing progress line (progress=False: plain lines instead of a bar)
    _one_line(*cli("--data", str(tmp_path / "data"), "--tokenizer", str(tmp_path / "tok_b")),
              "data/meta.json", "was prepared with another tokenizer")


def test_error_global_batch_not_divisible_by_ranks(cli):
    _one_line(*cli("--synthetic-vocab", "512", "--micro-batch", "4", "--global-batch", "12",
                   env={"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}),
              "--global-batch (12) is not divisible by --micro-batch (4) x ranks (2)")


def test_error_length_above_the_models_positions_before_the_data(cli, tmp_path):
    """As finetune / predict say it (ModelConfig.check_seq_length), from the config alone: the missing --data is
    never opened."""
    _one_line(*cli("--data", str(tmp_path / "no-data"), "--max-seq-length", "1024"),
              "bertforge pretrain: error: --max-seq-length 1024 exceeds the model's 512 positions (max_position_embeddings of "
              "--preset tiny); give at most 512, or a longer position table: --model max_position_embeddings=1024")
    with pytest.raises(ConfigError, match="1024 exceeds the model's 600 positions"):
        PretrainConfig.from_flat(max_seq_length=1024, model_overrides={"max_position_embeddings": 600})
    assert PretrainConfig.from_flat(max_seq_length=1024, model_overrides={"max_position_embeddings": 1024})


def test_error_missing_init_from_folder(cli, tmp_path):
    _one_line(*cli("--synthetic-vocab", "512", "--init-from", str(tmp_path / "nope")),
              f"bertforge pretrain: error: --init-from {tmp_path / 'nope'}: no such folder; give a Hugging Face BERT folder")


def test_error_unknown_preset(cli):
    _one_line(*cli("--synthetic-vocab", "512", "--preset", "bert-huge"), "unknown preset 'bert-huge'")


@pytest.mark.parametrize("typo, close", [("tinny", "'tiny'"), ("bert-bse", "'bert-base'"), ("Tiny", "'tiny'")])
def test_error_misspelt_preset_suggests_the_close_one(typo, close):
    """A misspelt preset names the close one, as every other choice does, from the config and from preset()."""
    from bertforge.config.model import preset

    for make in (lambda: PretrainConfig.from_flat(preset=typo), lambda: preset(typo)):
        with pytest.raises(ConfigError, match=rf"unknown preset '{typo}' \(did you mean {close}\?\); known presets"):
            make()
    with pytest.raises(ConfigError) as exc:
        preset("huge")
    assert "did you mean" not in str(exc.value)


def test_error_unknown_option(cli):
    with pytest.raises(SystemExit) as exc:
        cli("--synthetic-vocab", "512", "--learning-rate", "1")
    assert exc.value.code == 2


def test_error_deepspeed_json_contradicts_flag(cli, tmp_path):
    ds_json = tmp_path / "ds.json"
    ds_json.write_text(json.dumps({"train_micro_batch_size_per_gpu": 16}))
    _one_line(*cli("--synthetic-vocab", "512", "--micro-batch", "4", "--deepspeed-config", str(ds_json)),
              "sets micro-batch=16 but --micro-batch 4 was given")
    ds_json.write_text(json.dumps({"optimizer": {"type": "Adam"}}))
    _one_line(*cli("--synthetic-vocab", "512", "--deepspeed-config", str(ds_json)), "'optimizer' section")


def test_compiled_model_trains_like_eager_and_profile_writes_its_summary(tmp_path):
    """--compile (torch.compile of the model inside the DeepSpeed engine, inductor on CPU): same losses as eager;
    --profile-steps writes profile.json and the trace."""
    import json

    from tests.training.conftest import run_worker

    run_worker("compile", tmp_path, timeout=500)
    res = json.loads((tmp_path / "compile.json").read_text())
    assert len(res["eager"]) == 4
    assert max(abs(a - b) for a, b in zip(res["eager"], res["compiled"])) < 1e-4, res
    profile = json.loads((tmp_path / "eager" / "profile.json").read_text())  # --profile-steps 2 --profile-start 1
    assert profile["steps"] == 2 and profile["window_s"] > 0 and profile["device_idle_frac"] is None  # CPU
    assert any(op["name"] == "aten::mm" for op in profile["top_ops"])
    assert (tmp_path / "eager" / "profile" / "trace.json").stat().st_size > 1000
    assert not (tmp_path / "compiled" / "profile.json").exists()


def test_error_triton_kernels_on_cpu_without_the_interpreter(cli, monkeypatch):
    """--kernels triton on a CPU machine outside the interpreter: one line naming the flag, no run folder."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    _one_line(*cli("--synthetic-vocab", "512", "--kernels", "triton"), "--kernels triton needs a GPU")
