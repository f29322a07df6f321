"""`bertforge` command line. Each subcommand lives in its own module under engine/commands/ that defines
`register(subparsers)` (adds its parser and sets `func`); modules are imported here by name so a missing optional
dependency of one command never breaks the others. Errors the user can fix (bertforge.errors.UserError and its
subclasses) exit with status 2 and one line on stderr naming the subcommand that got them (`bertforge finetune
classify: error: ...`), as argparse's own errors do; BERTFORGE_TRACEBACK=1 shows their traceback instead. Any
other exception is a bug and keeps its traceback."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from bertforge.config.checks import close_names, did_you_mean, invalid_choice
from bertforge.errors import UserError, describe_os_error
from bertforge.log import configure

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
        p.set_defaults(func=lambda args: _fail(f"`bertforge {name}` is unavailable: {reason}", p.prog))
    return register


def _fail(message: str, prog: str = "bertforge") -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


class _RequiredInUsage(argparse.HelpFormatter):
    """Options marked by bertforge.commands.flags.mark_required appear without brackets in the usage line."""

    def _format_usage(self, usage, actions, groups, prefix):
        marked = [a for a in actions if getattr(a, "shown_required", False) and not a.required]
        for a in marked:
            a.required = True
        try:
            return super()._format_usage(usage, actions, groups, prefix)
        finally:
            for a in marked:
                a.required = False


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors (unknown option, bad value) as one line naming the (sub)command that got them, with a "did you
    mean" for a mistyped option or choice (bertforge.config.checks.close_names: only genuinely close names). No
    abbreviations (`--out` never silently means `--output-dir`). Subparsers inherit the class, so all of this holds
    for every command. The leaf command's name travels in the namespace (`command_prog`) for main's own errors."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        base = kwargs.get("formatter_class", argparse.HelpFormatter)
        kwargs["formatter_class"] = type(f"Required{base.__name__}", (_RequiredInUsage, base), {})
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        parsed, extras = super().parse_known_args(args, namespace)
        if self._subparsers is None:  # a leaf command: what it does not know is an error here
            if extras:
                self.error(f"unrecognized arguments: {' '.join(extras)}{self._suggestion(extras)}")
            parsed.command_prog = self.prog
        return parsed, extras

    def _suggestion(self, extras: list[str]) -> str:
        known = [o for o in self._option_string_actions if o.startswith("--")]
        for word in extras:
            if word.split("=", 1)[0] in TOP_LEVEL_OPTIONS and word.split("=", 1)[0] not in known:
                return f"; {word.split('=', 1)[0]} is an option of `bertforge` itself: give it before the command"
            if word.startswith("--"):  # what an abbreviation would have meant first, then the close names
                hint = did_you_mean(word.split("=", 1)[0], known, prefixes=True)
                if hint:
                    return f"; {hint}"
        return ""

    def _check_value(self, action, value):
        """An unknown (sub)command: one line with the close names (close_names), else the list of choices; a value
        outside an option's choices: the same hint (bertforge.config.checks.invalid_choice)."""
        if isinstance(action, argparse._SubParsersAction) and value not in action.choices:
            self.exit(2, unknown_choice_line(self.prog, (action.metavar or "command").lower(), value,
                                             list(action.choices)) + "\n")
        if action.choices is not None and value not in action.choices:
            raise argparse.ArgumentError(action, invalid_choice("", value, action.choices))
        super()._check_value(action, value)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def unknown_choice_line(prog: str, kind: str, value: str, choices: list[str]) -> str:
    """`bertforge: unknown command 'pretrian'; did you mean 'pretrain'? (see `bertforge --help` for the list)`;
    without a close name (bertforge.config.checks.close_names) the choices themselves."""
    close = close_names(value, choices)
    if close:
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? (see `{prog} --help` for the list)"
    else:
        hint = f"choose from {', '.join(choices)} (see `{prog} --help`)"
    return f"{prog}: unknown {kind} {value!r}; {hint}"


TOP_LEVEL_OPTIONS = ("--log-level", "--version")
"""Options of `bertforge` itself (build_parser), refused after a command with a pointer to their place."""


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="bertforge", description="Pretrain and finetune BERT-style encoders.")
    parser.add_argument("--version", action="version", version=f"bertforge {_version()}")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), type=str.lower, default=None,
                        help="level of the library's messages (the `bertforge` logger); default: $BERTFORGE_LOG_LEVEL, "
                             "else info")
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
    try:
        configure(args.log_level)
    except ValueError as exc:  # a bad BERTFORGE_LOG_LEVEL
        return _fail(str(exc))
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    prog = getattr(args, "command_prog", parser.prog)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        if os.environ.get("BERTFORGE_TRACEBACK"):
            raise
        return _fail(str(exc), prog)
    except OSError as exc:  # the user's file system (full disk, a file in the way, a link loop): one line
        line = describe_os_error(exc)
        if line is None or os.environ.get("BERTFORGE_TRACEBACK"):
            raise
        return _fail(line, prog)
    except KeyboardInterrupt:
        return _fail("interrupted", prog)


if __name__ == "__main__":
    sys.exit(main())
