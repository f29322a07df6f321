"""Command-line conventions users bring from other tools: negated flags with their own help line, required flags
shown as required, no abbreviations, "did you mean" on a typo (and only for a close name), Hugging Face's schedule
names, non-BERT checkpoints refused from config.json, the MFU peak matched by exact device name, --threads on
pretrain as on finetune."""
import json

import pytest

from bertforge.cli import build_parser, main
from bertforge.config.model import ModelConfig
from bertforge.config.pretrain import PretrainConfig
from bertforge.errors import ConfigError
from bertforge.train.metrics import peak_flops


def _help(*command):
    parser = build_parser()
    for name in command:
        parser = parser._subparsers._group_actions[0].choices[name]
    return parser.format_help()


def test_negated_flags_read_as_their_own_switch():
    text = " ".join(_help("pretrain").split())
    assert "--export-hf, --no-export-hf Export the final weights" in text and "--no-export-hf: off" in text
    prepare = " ".join(_help("prepare").split())
    assert "--progress, --no-progress A progress bar" in prepare


def test_no_progress_means_the_same_everywhere():
    docs = {" ".join(_help(*c).split()).split("--no-progress A progress bar", 1)[1][:160]
            for c in (("pretrain",), ("prepare",), ("finetune", "classify"), ("predict",))}
    assert len(docs) == 1 and "plain" in docs.pop()


def test_required_flags_are_unbracketed_in_usage():
    usage = _help("finetune", "classify").split("\n\n")[0]
    assert " --out OUT" in usage and "[--out OUT]" not in usage and "[--lr LR]" in usage
    mlm = " ".join(_help("finetune", "mlm").split("\n\n")[0].split())
    assert " --corpus PATH [PATH ...]" in mlm and "[--corpus" not in mlm


@pytest.mark.parametrize("argv, want", [
    (["pretrain", "--out", "x"], "bertforge pretrain: error: unrecognized arguments: --out x; did you mean --output-dir?"),
    (["finetune", "classify", "--epoch", "3"], "did you mean --epochs?"),
    (["prepare", "--tokenizer", "t", "--out", "o", "--max-seq-lenght", "64", "in.txt"], "did you mean --max-seq-length?"),
])
def test_unknown_flag_is_refused_by_its_command_with_a_suggestion(argv, want, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and want in err and len(err.splitlines()) == 1


def test_suggestions_only_for_close_names(capsys):
    """One rule (close_names: difflib ratio >= 0.75, at most 3; a command line's abbreviations first): typos are
    suggested, unrelated names (--threads was offered --betas, ratio 0.63) are not."""
    from bertforge.config.checks import close_names

    assert close_names("--threads", ["--betas", "--steps", "--seed"]) == []
    assert close_names("--thread", ["--betas", "--threads"]) == ["--threads"]
    assert close_names("--out", ["--seed", "--output-dir"], prefixes=True) == ["--output-dir"]
    assert close_names("a", [f"a{i}" for i in range(9)], prefixes=True) == ["a0", "a1", "a2"]
    for argv in (["pretrain", "--frobnicate", "1"], ["finetune", "classify", "--learning-rate", "1"]):
        with pytest.raises(SystemExit):
            main(argv)
        err = capsys.readouterr().err.strip()
        assert f"unrecognized arguments: {argv[-2]} 1 (see `bertforge" in err and "did you mean" not in err, err


def test_pretrain_threads_is_finetunings_flag():
    line = "--threads THREADS torch intra-op CPU threads; 0 = torch's default. (default: 0)"
    assert line in " ".join(_help("pretrain").split()) and line in " ".join(_help("finetune", "classify").split())
    assert PretrainConfig.from_flat(threads=2).run.threads == 2
    with pytest.raises(ConfigError, match="--threads must be >= 0, got -1"):
        PretrainConfig.from_flat(threads=-1)


@pytest.mark.parametrize("hf, ours", [("linear", "linear"), ("cosine", "cosine"), ("polynomial", "poly"),
                                      ("constant_with_warmup", "constant"), ("poly", "poly")])
def test_hugging_face_schedule_names(hf, ours):
    assert PretrainConfig.from_flat({"decay": hf}).optim.decay == ours


def test_unknown_schedule_is_one_line():
    with pytest.raises(ConfigError, match="--decay: invalid choice 'inverse_sqrt'; choose from linear, poly, cosine, "
                                          "constant"):
        PretrainConfig.from_flat({"decay": "inverse_sqrt"})


@pytest.mark.parametrize("model_type, arch", [("roberta", "RobertaForMaskedLM"), ("modernbert", "ModernBertForMaskedLM")])
def test_non_bert_checkpoint_refused_from_config_json(tmp_path, model_type, arch):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type, "architectures": [arch],
                                                      "hidden_size": 32, "num_attention_heads": 2}))
    with pytest.raises(ConfigError, match=f"model_type '{model_type}' \\({arch}\\) is not BERT"):
        ModelConfig.from_hf_config(tmp_path / "config.json")
    # the checkpoint reader that finetune / export / predict start from refuses it before any weight file is read
    from bertforge.errors import CheckpointError
    from bertforge.hf import read_config

    with pytest.raises(CheckpointError, match="is not BERT"):
        read_config(tmp_path)  # (there is no weight file here at all)


def test_peak_flops_exact_names_and_override():
    assert peak_flops(device_name="NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops(device_name="NVIDIA H100 PCIe") == 756e12  # not the SXM peak by substring
    assert peak_flops(device_name="NVIDIA H100 something new") is None
    assert peak_flops(5e12, device_name="NVIDIA H100 PCIe") == 5e12
    assert PretrainConfig.from_flat({"peak_flops": 1e14}).run.peak_flops == 1e14


def test_a_top_level_option_after_the_command_says_where_it_goes(capsys):
    """`bertforge pretrain --log-level debug` names the option's place (it was offered --log-every)."""
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "--log-level", "debug"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1, err
    assert "--log-level is an option of `bertforge` itself: give it before the command" in err
    assert "--log-every" not in err


def test_a_choice_differing_only_in_case_is_the_one_suggestion():
    """`--scheme IOB2` suggests 'iob2' alone (it also got 'iob1', one typo from its lower case)."""
    from bertforge.config.checks import close_names, invalid_choice

    assert close_names("IOB2", ["iob1", "iob2", "bioes"], n=2) == ["iob2"]
    assert "(did you mean 'iob2'?)" in invalid_choice("--scheme", "IOB2", ["iob1", "iob2", "bioes"])
    assert close_names("iob3", ["iob1", "iob2"], n=2) == ["iob1", "iob2"]
