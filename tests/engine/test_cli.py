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
    assert err.startswith("bertforge: error: unknown data set 'wikki' (did you mean 'wiki'?); known: wiki,"), err
