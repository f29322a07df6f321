import subprocess
import sys

import pytest

from bertforge.cli import COMMANDS, main


def test_help_lists_every_subcommand(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name, *_ in COMMANDS:
        assert name in out


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "bertforge.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("bertforge ")


def test_unknown_subcommand_is_one_line_error():
    proc = subprocess.run([sys.executable, "-m", "bertforge.cli", "pretrian"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr == ("bertforge: unknown command 'pretrian'; did you mean 'pretrain'? (see `bertforge --help` "
                           "for the list)\n")


@pytest.mark.parametrize("argv, want", [
    (["Pretrain"], "bertforge: unknown command 'Pretrain'; did you mean 'pretrain'? (see `bertforge --help` for the "
                   "list)"),
    (["finetune", "clasify"], "bertforge finetune: unknown task 'clasify'; did you mean 'classify'? (see "
                              "`bertforge finetune --help` for the list)"),
    (["data", "fecth"], "bertforge data: unknown action 'fecth'; did you mean 'fetch'?"),
    (["tokenizer", "trian"], "bertforge tokenizer: unknown action 'trian'; did you mean 'train'?"),
    (["frobnicate"], "bertforge: unknown command 'frobnicate'; choose from data, tokenizer, prepare, pretrain, "
                     "export, plot, finetune, predict, evaluate (see `bertforge --help`)"),  # nothing close: the list
])
def test_a_mistyped_command_gets_the_close_name_in_one_line(argv, want, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith(want) and len(err.strip().splitlines()) == 1, err


def test_a_mistyped_data_set_name_gets_the_close_name(capsys):
    assert main(["data", "fetch", "wikki"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bertforge data fetch: error: unknown data set 'wikki' (did you mean 'wiki'?); known: "
                          "wiki,"), err


def _exit_and_err(argv, capsys) -> tuple:
    """(exit code, stderr) of the command line on argv, whether main returns or argparse exits."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv, want", [
    (["finetune", "classify", "--out", "o", "--class-weight", "balansed"],
     "bertforge finetune classify: error: --class-weight: invalid choice 'balansed' (did you mean 'balanced'?); "
     "choose from auto, none, balanced"),
    (["pretrain", "--synthetic-vocab", "64", "--precision", "bf61"],
     "bertforge pretrain: error: --precision: invalid choice 'bf61' (did you mean 'bf16'?); choose from fp32, bf16, "
     "fp16"),
    (["finetune", "ner", "--out", "o", "--scheme", "bioe"],
     "bertforge finetune ner: error: --scheme: invalid choice 'bioe' (did you mean 'bioes'?); choose from iob1, "
     "iob2, bioes, bilou, plain"),
    (["predict", "m", "i", "--precision", "bf61"], "bertforge predict: error: --precision: invalid choice 'bf61' "
                                                   "(did you mean 'bf16'?)"),
    (["--log-level", "warnin"], "bertforge: error: argument --log-level: invalid choice 'warnin' (did you mean "
                                "'warning'?); choose from debug, info, warning, error"),
    (["finetune", "nre"], "bertforge finetune: unknown task 'nre'; did you mean 'ner'?"),  # a swap in 3 letters
    (["pretrain", "--synthetic-vocab", "64", "--objective", "nsp"],  # nothing close: the choices alone
     "bertforge pretrain: error: --objective: invalid choice 'nsp'; choose from mlm+nsp, mlm+sop, mlm\n"),
])
def test_a_mistyped_choice_gets_the_close_name_in_one_line(argv, want, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _exit_and_err(argv, capsys)
    assert code == 2 and err.startswith(want) and len(err.strip().splitlines()) == 1, err


def test_close_names_take_one_typo_in_short_names_and_nothing_absurd():
    from bertforge.config.checks import close_names

    assert close_names("nre", ["classify", "ner", "mlm"]) == ["ner"]  # difflib alone: ratio 0.67, none
    assert close_names("mlx", ["classify", "ner", "mlm"]) == ["mlm"]
    assert close_names("Ner", ["ner"]) == ["ner"] and close_names("fp61", ["fp32", "fp16"]) == ["fp16"]
    for word in ("x", "ab", "xyz", "nsp", "ner", "nlp"):
        assert close_names(word, ["classify", "mlm", "mlm+nsp", "pooling"]) == [], word


@pytest.mark.parametrize("argv, prog", [
    (["finetune", "classify"], "bertforge finetune classify"),  # a missing required flag
    (["finetune", "ner", "--out", "o", "--epochs", "-1"], "bertforge finetune ner"),  # a bad value
    (["finetune", "mlm", "--out", "o", "--precision", "fp8"], "bertforge finetune mlm"),  # a bad choice
    (["finetune", "classify", "--epochs", "x"], "bertforge finetune classify"),  # a bad type (argparse)
    (["tokenizer", "train"], "bertforge tokenizer train"),
    (["prepare"], "bertforge prepare"),
    (["pretrain", "--synthetic-vocab", "64", "--steps", "0"], "bertforge pretrain"),
    (["evaluate", "m", "i", "--micro-batch", "0"], "bertforge evaluate"),
    (["data", "fetch", "wikki"], "bertforge data fetch"),
])
def test_every_error_names_its_subcommand(argv, prog, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _exit_and_err(argv, capsys)
    assert code == 2 and err.startswith(f"{prog}: error: ") and len(err.strip().splitlines()) == 1, err
