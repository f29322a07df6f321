import subprocess
import sys

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
    assert proc.returncode == 2 and "invalid choice: 'pretrian'" in proc.stderr
