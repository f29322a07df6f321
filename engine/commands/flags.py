"""Command-line flags generated from config dataclasses: one flag per field, its docstring as help, its type as the
parser, so a config field and its flag never drift apart (pretrain and finetune both use this).

Rules: `name` -> `--name-with-dashes` (or a rename); int / float / str fields take a value; `X | None` takes an X;
a bool that defaults to False is a switch `--name`, one that defaults to True is `--no-name`; a tuple is
`--name A,B` (of ints or strings when the annotation says `tuple[int, ...]` / `tuple[str, ...]`, else floats). Help
ends with the default. Parsers are built with `argument_default=SUPPRESS`, so the parsed namespace holds exactly the
flags the user gave (the 'explicit' set a DeepSpeed JSON may not contradict); the dataclass supplies the defaults."""
from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable

from bertforge.config.docs import field_docs
from bertforge.errors import ConfigError


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _strs(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _value_type(annotation: Any):
    """The argparse `type` of a field annotation (None for bool / unsupported)."""
    if isinstance(annotation, str):
        annotation = {"int": int, "float": float, "str": str, "bool": bool, "tuple": tuple, "dict": dict,
                      "tuple[int, ...]": "ints", "tuple[str, ...]": "strs", "float | None": float, "int | None": int,
                      "str | None": str}.get(annotation, annotation)
    if annotation == "ints":
        return _ints
    if annotation == "strs":
        return _strs
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _value_type(args[0]) if len(args) == 1 else None
    if annotation is tuple or origin is tuple:
        return _floats
    if annotation in (int, float, str):
        return annotation
    return None


def add_dataclass_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *,
                        skip: Iterable[str] = (), rename: dict[str, str] | None = None,
                        help_extra: dict[str, str] | None = None, defaults: dict | None = None,
                        required: Iterable[str] = ()) -> list[str]:
    """Add one flag per field of dataclass `cls` to `parser` (fields in `skip` get none). Returns the field names
    that got a flag. `rename` maps a field to another flag name (without dashes); `help_extra` appends text;
    `defaults` overrides the default shown in the help (where a caller's config changes it); `required` fields are
    shown as required in the usage line and help (`mark_required`; the config's own check refuses them missing)."""
    docs = field_docs(cls)
    rename, help_extra, defaults, required = rename or {}, help_extra or {}, defaults or {}, set(required)
    added = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        name = rename.get(f.name, f.name).replace("_", "-")
        text = (docs.get(f.name, "") + (" " + help_extra[f.name] if f.name in help_extra else "")).replace("%", "%%")
        default = defaults.get(f.name, f.default if f.default is not dataclasses.MISSING else None)
        annotation = f.type
        if annotation in (bool, "bool"):
            if default is True:  # both spellings on one help line, so --no-X never reads as X's description
                text = re.sub(r"\s*Flag: --no-[\w-]+\.", "", text)
                parser.add_argument(f"--{name}", dest=f.name, action=argparse.BooleanOptionalAction,
                                    default=argparse.SUPPRESS, help=f"{text} (default: on; --no-{name}: off)")
            else:
                parser.add_argument(f"--{name}", dest=f.name, action="store_true", help=text)
        else:
            kind = _value_type(annotation)
            if kind is None:
                raise TypeError(f"{cls.__name__}.{f.name}: no flag rule for type {annotation!r}; skip it and add "
                                f"the flag by hand")
            metavar = ("A,B" if kind in (_floats, _ints) else "NAME,NAME" if kind is _strs
                       else name.replace("-", "_").upper())
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            if default not in (None, ""):
                text += f" (default: {shown})"
            action = parser.add_argument(f"--{name}", dest=f.name, type=kind, metavar=metavar, help=text)
            if f.name in required:
                mark_required(action)
        added.append(f.name)
    return added


class Replaced(argparse.Action):
    """A flag replaced by another of a new meaning (hidden from --help): refused in one line naming the new one.
    `line(value)` gives that line; the parser prefixes its command."""

    def __init__(self, option_strings, dest, line, **kwargs):
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, **kwargs)
        self.line = line

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(self.line(values))


def mark_required(action: argparse.Action) -> argparse.Action:
    """Show `action` as required (no brackets in the usage line, "(required)" in its help) while leaving the check
    to the config, whose error names the flag and what to give (engine/cli.py's formatter reads the mark)."""
    action.shown_required = True
    if action.help and "(required)" not in action.help:
        action.help += " (required)"
    return action


def given(args: argparse.Namespace, names: Iterable[str]) -> dict:
    """{name: value} of the flags among `names` that the user gave (parsers use argument_default=SUPPRESS)."""
    ns = vars(args)
    return {n: ns[n] for n in names if n in ns}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """--config FILE and --print-config (every training and data command)."""
    g = parser.add_argument_group("config file")
    g.add_argument("--config", dest="config_file", metavar="FILE",
                   help="YAML or JSON file of settings under the flags' names (--data -> data: ..., or the field "
                        "names of RUN/config.json, which is accepted as is); flags given as well override it, and "
                        "its settings count as given (a --deepspeed-config may not contradict them)")
    g.add_argument("--print-config", dest="print_config", action="store_true",
                   help="print the resolved settings as JSON (a valid --config file) and exit")


def with_config_file(args: argparse.Namespace, command: str, names: Iterable[str]) -> tuple[dict, frozenset]:
    """({field: value}, the fields set explicitly): the --config file's settings under the flags given (both count
    as explicit, e.g. for the DeepSpeed-JSON contradiction check)."""
    from bertforge.config.names import load, schema

    flags = given(args, names)
    path = getattr(args, "config_file", None)
    values = load(path, schema(command)) if path else {}
    args.config_file_fields = frozenset(values) - frozenset(flags)  # for config_file_error
    if isinstance(values.get("model_overrides"), dict) and isinstance(flags.get("model_overrides"), dict):
        flags = {**flags, "model_overrides": {**values["model_overrides"], **flags["model_overrides"]}}
    values.update(flags)
    return values, frozenset(values)


def config_file_error(exc: ConfigError, args: argparse.Namespace) -> ConfigError:
    """A bad value's ConfigError (its message starts with the setting's flag, `--eval-samples must be ...`) naming
    the --config file, the line of the key and the key when the value came from that file (no flag over it):
    `run.yaml:7: eval_samples: --eval-samples must be a positive integer, got 0`; any other error unchanged."""
    match = re.match(r"--([a-z0-9][a-z0-9-]*)", str(exc))
    path = getattr(args, "config_file", None)
    if match is None or path is None:
        return exc
    field = match.group(1).replace("-", "_")
    if field not in getattr(args, "config_file_fields", ()):
        return exc
    spellings = "|".join(re.escape(k) for k in {field, field.replace("_", "-")})
    where, key = "", field
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:  # read a moment ago; gone now: the message without a line
        lines = []
    for number, line in enumerate(lines, start=1):
        found = re.match(rf'\s*"?({spellings})"?\s*:', line)
        if found:
            where, key = f":{number}", found.group(1)
            break
    return ConfigError(f"{path}{where}: {key}: {exc}")


def print_config(values: dict) -> int:
    """The --print-config output: the resolved settings as one JSON object (field names; tuples as lists)."""
    import json

    print(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}, indent=2))
    return 0
