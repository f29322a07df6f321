"""One name -> field mapping for every way a setting arrives: a command-line flag, a config file (`--config FILE`,
YAML or JSON, or a run's `RUN/config.json`) and the Python API (`bertforge.pretrain(data=..., steps=...)`).

A `Schema` lists the settings of one command: each config field under its field name, plus the flag's name where
the flag is spelled differently (`--data` for `data_dir`, `--tokens` for `token_budget`, `--out` for
`output_dir`); dashes and underscores are the same (`max-seq-length` = `max_seq_length`), and a bool that defaults
to True also takes its flag's negation (`no_progress: true`). Values are converted by the field's type as the flag
would convert them (`"1e-3"` -> 1e-3, `"0.9,0.98"` -> (0.9, 0.98)), so a YAML string and a flag agree.

Unknown names raise ConfigError naming the source (file, or the Python call), the key and the close valid names
(bertforge.config.checks.close_names), or, with none close, where the valid names are listed; a replaced name
(bertforge.config.pretrain.REPLACED) names its replacement. This module imports
no torch (bottom layer)."""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertforge.config.checks import did_you_mean
from bertforge.errors import ConfigError

# field -> flag name (underscored), where they differ
PRETRAIN_FLAG_NAMES = {"data_dir": "data", "token_budget": "tokens", "model_overrides": "model"}
FINETUNE_FLAG_NAMES = {"output_dir": "out", "data_file": "data"}
# phase-2 setting of `bertforge pretrain` -> (the PretrainConfig field it sets in phase 2, help)
PHASE2 = {
    "phase2_steps": ("steps", "run phase 2 for N steps after phase 1"),
    "phase2_tokens": ("token_budget", "phase 2 token budget instead of steps"),
    "phase2_max_seq_length": ("max_seq_length", "phase 2 tokens per sequence (default 512)"),
    "phase2_micro_batch": ("micro_batch", "phase 2 micro batch (default: phase 1's)"),
    "phase2_global_batch": ("global_batch", "phase 2 global batch (default: phase 1's)"),
    "phase2_lr": ("lr", "phase 2 peak learning rate (default: phase 1's)"),
    "phase2_warmup_steps": ("warmup_steps", "phase 2 warmup steps (default: --warmup-ratio of its steps)"),
}
_RAW = {"shard_bytes"}  # checked by the dataclass itself (takes "64M")
FINETUNE_NO_EXTENSION = ("finetune has no --extend-steps: a finetuning run's length (--epochs, --min-steps) also sets "
                         "its warmup, its dev evaluations and the best state it keeps, so a resume cannot lengthen "
                         "it; finetune again into another --out (--model OUT/seed-N to train the exported model on)")
"""The one-line refusal of --extend-steps (pretraining's deliberate longer resume) by `bertforge finetune`."""


@dataclass(frozen=True)
class Schema:
    """The settings of one command: {field: type}, {field: flag name} where they differ, and the bools that
    default to True (they also take `no_<name>`)."""

    command: str
    types: dict[str, Any]
    flag_names: dict[str, str] = field(default_factory=dict)
    true_bools: frozenset = frozenset()

    def aliases(self) -> dict[str, tuple[str, bool]]:
        """{accepted name: (field, negated)}: field names, flag names, `no_` forms of True-default bools."""
        out = {name: (name, False) for name in self.types}
        out.update({flag: (name, False) for name, flag in self.flag_names.items()})
        for name in self.true_bools:
            out[f"no_{self.flag_names.get(name, name)}"] = (name, True)
        return out

    def valid_names(self) -> list[str]:
        """The names shown in errors: each field under its flag's spelling."""
        return sorted(self.flag_names.get(n, n) for n in self.types)


def _fields(cls: type) -> tuple[dict[str, Any], set[str]]:
    hints = typing.get_type_hints(cls)
    types_ = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    trues = {f.name for f in dataclasses.fields(cls) if types_[f.name] is bool and f.default is True}
    return types_, trues


def _schema(command: str, classes: list[type], flag_names: dict[str, str], extra: dict[str, Any] | None = None):
    all_types, trues = {}, set()
    for cls in classes:
        t, b = _fields(cls)
        all_types.update(t)
        trues |= b
    all_types.update(extra or {})
    names = {k: v for k, v in flag_names.items() if k in all_types}
    return Schema(command, all_types, names, frozenset(trues))


def schema(command: str) -> Schema:
    """The Schema of 'pretrain', 'finetune classify' / 'finetune ner' / 'finetune mlm', 'prepare', 'tokenizer train',
    'predict' or 'evaluate'."""
    from bertforge.config import finetune as F
    from bertforge.config.prepare import PrepareConfig
    from bertforge.config.pretrain import SECTIONS

    if command == "pretrain":
        return _schema(command, list(SECTIONS.values()), PRETRAIN_FLAG_NAMES, {k: int for k in PHASE2} |
                       {"phase2_lr": float})
    tasks = {"classify": F.ClassifyConfig, "ner": F.NerConfig, "mlm": F.MlmConfig}
    if command.startswith("finetune ") and command.split()[1] in tasks:
        return _schema(command, list(tasks[command.split()[1]].SECTIONS.values()), FINETUNE_FLAG_NAMES)
    if command == "prepare":
        return _schema(command, [PrepareConfig], {}, {"inputs": tuple[str, ...], "tokenizer": str, "out": str})
    if command == "tokenizer train":
        return Schema(command, {"inputs": tuple[str, ...], "out": str, "vocab_size": int, "cased": bool,
                                "min_frequency": int})
    if command in ("predict", "evaluate"):
        return _schema(command, [F.InferenceConfig], {})
    raise ValueError(f"no settings schema for command {command!r}")


# ---- values ---------------------------------------------------------------------------------------------------
def _convert(value: Any, kind: Any, where: str) -> Any:
    """`value` as the field type `kind` (the flag's conversion for strings); ConfigError naming `where`."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        return _convert(value, inner[0], where)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(value) if isinstance(value, (int, str)) else _bad(value, "an integer", where)
        except ValueError:
            return _bad(value, "an integer", where)
    if kind is float:
        if isinstance(value, bool):
            return _bad(value, "a number", where)
        try:
            return float(value) if isinstance(value, (int, float, str)) else _bad(value, "a number", where)
        except ValueError:
            return _bad(value, "a number", where)
    if kind is str:
        return value if isinstance(value, str) else _bad(value, "a string", where)
    if kind is tuple or origin is tuple:
        args = [a for a in typing.get_args(kind) if a is not Ellipsis]
        item = args[0] if args else float
        items = [x.strip() for x in value.split(",") if x.strip()] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            return _bad(value, "a list", where)
        return tuple(_convert(x, item, where) for x in items)
    if kind is dict:
        return _model_overrides(value, where)
    return value


def _bad(value: Any, what: str, where: str):
    raise ConfigError(f"{where}: expected {what}, got {value!r}")


def _model_overrides(value: Any, where: str) -> dict:
    """{ModelConfig field: value} from a mapping or from `FIELD=VALUE` strings (the --model flag's form)."""
    from bertforge.config.model import ModelConfig

    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)):
        pairs = {}
        for text in value:
            if not isinstance(text, str) or "=" not in text:
                raise ConfigError(f"{where}: expected FIELD=VALUE, got {text!r}")
            key, raw = text.split("=", 1)
            pairs[key.strip()] = raw.strip()
        value = pairs
    if not isinstance(value, dict):
        return _bad(value, "a mapping of ModelConfig fields", where)
    kinds = typing.get_type_hints(ModelConfig)
    out = {}
    for key, v in value.items():
        if key not in kinds:
            hint = did_you_mean(str(key), kinds) or f"known: {', '.join(kinds)}"
            raise ConfigError(f"{where}: unknown model field {key!r}; {hint}")
        out[key] = _convert(v, kinds[key], f"{where}.{key}")
    return out


def normalize(values: dict, sch: Schema, source: str, list_all: bool = False) -> dict:
    """{field: converted value} from {any accepted name: value}. `source` names where the values came from (a
    file path, 'bertforge.pretrain()'); an unknown name raises ConfigError naming it and the close names, else
    (none close) pointing to `bertforge <command> --help`; with `list_all` (the Python API, which has no --help)
    every valid name as well."""
    aliases = sch.aliases()
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name == "extend_steps" and sch.command.startswith("finetune"):
            raise ConfigError(f"{source}: {FINETUNE_NO_EXTENSION}")
        if sch.command == "pretrain" and name not in aliases:
            from bertforge.config.pretrain import REPLACED, replaced_setting

            if name in REPLACED:
                given = {str(k).lstrip("-").replace("-", "_"): v for k, v in values.items()}
                raise ConfigError(f"{source}: {replaced_setting(name, given)}")
        if name not in aliases:
            close = did_you_mean(name, aliases)
            hint = f"; {close}" if close else "; no close match among its settings"
            if list_all:
                hint += f" (valid names: {', '.join(sch.valid_names())})"
            elif not close:
                hint += f" (they are the flags of `bertforge {sch.command} --help`)"
            raise ConfigError(f"{source}: unknown setting {key!r} for `bertforge {sch.command}`{hint}")
        target, negated = aliases[name]
        where = f"{source}: {key}"
        if target in _RAW:
            converted = value
        else:
            converted = _convert(value, bool if negated else sch.types[target], where)
        if negated:
            converted = not converted
        if target in out and out[target] != converted:
            raise ConfigError(f"{source}: {key} sets {target} again, to another value; give it once")
        out[target] = converted
    return out


# ---- files ----------------------------------------------------------------------------------------------------
def read_config_file(path: str | Path) -> dict:
    """The flat {name: value} mapping of a YAML (.yaml / .yml) or JSON file. A run's RUN/config.json (the resolved
    config under 'train', the model under 'model') gives its 'train' block. ConfigError (file and line) when the
    file is missing, does not parse, or is not a mapping."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise ConfigError(f"--config {path}: unknown suffix {suffix!r}; give a .yaml, .yml or .json file")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror or exc})") from None
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{path}{line}: not valid YAML ({problem})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of setting names to values, got {type(data).__name__}")
    if _is_run_config(data):
        return dict(data["train"])
    return data


def _is_run_config(data: dict) -> bool:
    """A `bertforge pretrain` RUN/config.json: {'train': {...}, 'model': {...}, 'world_size': N, ...}."""
    return isinstance(data.get("train"), dict) and isinstance(data.get("model"), dict) and "world_size" in data


def load(path: str | Path, sch: Schema) -> dict:
    """{field: value} of a config file for the command of `sch` (read_config_file + normalize)."""
    return normalize(read_config_file(path), sch, str(path))


def to_flat_names(values: dict, sch: Schema) -> dict:
    """{field: value} as JSON-ready values (tuples as lists), in the schema's field order."""
    order = list(sch.types)
    out = {}
    for name in sorted(values, key=lambda n: order.index(n) if n in order else len(order)):
        v = values[name]
        out[name] = list(v) if isinstance(v, tuple) else v
    return out
