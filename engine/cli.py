"""`bertforge` command line. Each subcommand lives in its own module under engine/commands/ that defines
`register(subparsers)` (adds its parser and sets `func`); modules are imported here by name so a missing optional
dependency of one command never breaks the others. Errors the user can fix (bertforge.errors.UserError and its
subclasses) exit with status 2 and one line on stderr; BERTFORGE_TRACEBACK=1 shows their traceback instead. Any
other exception is a bug and keeps its traceback."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from bertforge.errors import UserError, describe_os_error

# (subcommand, module under bertforge.commands, one-line help). Order = order in --help.
COMMANDS: list[tuple[str, str, str]] = [
    ("data", "data", "fetch the real data sets into the cache ($BERTFORGE_CACHE)"),
    ("tokenizer", "tokenizer", "train or inspect a WordPiece vocabulary"),
    ("prepare", "prepare", "turn raw text into a sharded, memory-mapped indexed dataset"),
    ("pretrain", "pretrain", "MLM (+NSP or SOP) pretraining on DeepSpeed (ZeRO 0-3, bf16/fp16/fp32)"),
    ("export", "export", "export a checkpoint to Hugging Face format or one consolidated fp32 file"),
    ("plot", "plot", "render a run's loss/accuracy/throughput curves to PNG"),
    ("finetune", "finetune", "low-learning-rate finetuning: classify, ner, mlm"),
    ("predict", "predict", "run a finetuned model over a file, JSONL out"),
    ("evaluate", "evaluate", "score a finetuned model on a labelled file"),
]


def _unavailable(name: str, reason: str):
    def register(subparsers):
        p = subparsers.add_parser(name, help=f"[unavailable] {reason}")
        p.set_defaults(func=lambda args: _fail(f"`bertforge {name}` is unavailable: {reason}"))
    return register


def _fail(message: str) -> int:
    print(f"bertforge: error: {message}", file=sys.stderr)
    return 2


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors (unknown option, bad value) as one line naming the command; subparsers inherit the class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="bertforge", description="Pretrain and finetune BERT-style encoders.")
    parser.add_argument("--version", action="version", version=f"bertforge {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, _help in COMMANDS:
        try:
            register = importlib.import_module(f"bertforge.commands.{module}").register
        except ModuleNotFoundError as exc:
            register = _unavailable(name, f"missing dependency {exc.name!r}")
        register(subparsers)
    return parser


def _version() -> str:
    from bertforge import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    from bertforge.malloc import pin_mmap_threshold

    pin_mmap_threshold()  # flat memory over long runs with variable-shaped batches (engine/malloc.py)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        if os.environ.get("BERTFORGE_TRACEBACK"):
            raise
        return _fail(str(exc))
    except OSError as exc:  # the user's file system (full disk, a file in the way, a link loop): one line
        line = describe_os_error(exc)
        if line is None or os.environ.get("BERTFORGE_TRACEBACK"):
            raise
        return _fail(line)
    except KeyboardInterrupt:
        return _fail("interrupted")


if __name__ == "__main__":
    sys.exit(main())
