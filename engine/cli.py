"""`bertforge` command line. Each subcommand lives in its own module under engine/commands/ that defines
`register(subparsers)` (adds its parser and sets `func`); modules are imported here by name so a missing optional
dependency of one command never breaks the others. Errors the user can fix exit with one line on stderr."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# (subcommand, module under engine.commands, one-line help). Order = order in --help.
COMMANDS: list[tuple[str, str, str]] = [
    ("data", "data", "fetch the real data sets of DATA.md into the cache ($BERTFORGE_CACHE)"),
    ("tokenizer", "tokenizer", "train or inspect a WordPiece vocabulary"),
    ("prepare", "prepare", "turn raw text into a sharded, memory-mapped indexed dataset"),
    ("pretrain", "pretrain", "MLM+NSP pretraining on DeepSpeed (ZeRO 0-3, bf16/fp16/fp32)"),
    ("finetune", "finetune", "low-learning-rate finetuning: classify, ner, mlm"),
    ("predict", "predict", "run a finetuned model over a file, JSONL out"),
    ("evaluate", "evaluate", "score a finetuned model on a labelled file"),
    ("export", "export", "export a checkpoint to Hugging Face format"),
    ("plot", "plot", "render a run's loss/accuracy/throughput curves to PNG"),
    ("smoke", "smoke", "forward/backward of a preset on real tokenized text (a quick health check)"),
]


class UserError(Exception):
    """An error caused by the user's input; printed as one line without a traceback."""


def _not_built(name: str, reason: str):
    def register(subparsers):
        p = subparsers.add_parser(name, help=f"[unavailable] {reason}")
        p.set_defaults(func=lambda args: _fail(f"`bertforge {name}` is unavailable: {reason}"))
    return register


def _fail(message: str) -> int:
    print(f"bertforge: error: {message}", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bertforge", description="Pretrain and finetune BERT-style encoders.")
    parser.add_argument("--version", action="version", version=f"bertforge {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, help_text in COMMANDS:
        try:
            mod = importlib.import_module(f"engine.commands.{module}")
            register = mod.register
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("engine.commands"):
                register = _not_built(name, f"not built yet ({help_text})")
            else:
                register = _not_built(name, f"missing dependency {exc.name!r}")
        register(subparsers)
    return parser


def _version() -> str:
    from engine import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted")
    except (FileNotFoundError, ValueError) as exc:
        if os.environ.get("BERTFORGE_TRACEBACK"):
            raise
        return _fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())
