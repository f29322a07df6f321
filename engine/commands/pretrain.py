"""`bertforge pretrain`: MLM pretraining on DeepSpeed, with NSP (default), SOP or alone (--objective mlm+nsp |
mlm+sop | mlm). A preset plus typed overrides: every PretrainConfig
field is a flag (--micro-batch, --zero-stage, ...), grouped by section, with its docstring as help. Flags given
explicitly may not be contradicted by --deepspeed-config. `--phase2-steps N` runs BERT's two-phase recipe in one
command: phase 1 into OUTPUT/phase1, then phase 2 at --phase2-max-seq-length (512) into OUTPUT/phase2 starting from
phase 1's weights.

Launch it plainly, under `torchrun` or under `deepspeed` (docs/launch.md)."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from bertforge.commands.flags import (Replaced, add_config_flags, add_dataclass_flags, config_file_error, print_config,
                                      with_config_file)
from bertforge.config import ModelConfig
from bertforge.config.checks import did_you_mean
from bertforge.config.docs import field_docs
from bertforge.config.names import PHASE2, PRETRAIN_FLAG_NAMES
from bertforge.config.pretrain import REPLACED, SECTIONS, PretrainConfig, replaced_setting
from bertforge.errors import ConfigError

HAND_MADE = {"model_overrides", "data_dir"}  # --model FIELD=VALUE (repeatable); --data DIR or W:DIR W:DIR ...
RENAMED = {k: v for k, v in PRETRAIN_FLAG_NAMES.items() if k not in HAND_MADE}


def _bool(text: str) -> bool:
    """'1' / 'true' / 'yes' / 'on' or '0' / 'false' / 'no' / 'off' (any case)."""
    value = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
             "off": False}.get(text.strip().lower())
    if value is None:
        raise ValueError(text)
    return value


def _model_override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    types = {f.name: f.type for f in dataclasses.fields(ModelConfig)}
    if key not in types:
        hint = did_you_mean(key, types) or f"known: {', '.join(types)}"
        raise argparse.ArgumentTypeError(f"unknown model field {key!r}; {hint}")
    kind = {"int": int, "float": float, "str": str, "bool": _bool}[str(types[key])]
    try:
        return key, kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"model field {key} needs a {kind.__name__}, got {value!r}") from None


def register(subparsers) -> None:
    p = subparsers.add_parser("pretrain", help="MLM (+NSP or SOP) pretraining on DeepSpeed (ZeRO 0-3, bf16/fp16/fp32)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              argument_default=argparse.SUPPRESS)
    section_docs = field_docs(PretrainConfig)
    for section, cls in SECTIONS.items():
        g = p.add_argument_group(f"{section}: {section_docs[section].rstrip('.')}")
        add_dataclass_flags(g, cls, skip=HAND_MADE, rename=RENAMED)
        if section == "data":
            g.add_argument("--data", dest="data_dir", nargs="+", metavar="DIR|W:DIR",
                           help=" ".join(field_docs(cls)["data_dir"].split()).replace("%", "%%"))
        if section == "model":
            g.add_argument("--model", dest="model_overrides", type=_model_override, action="append",
                           metavar="FIELD=VALUE", help="override a ModelConfig field of the preset, e.g. "
                           "--model num_hidden_layers=4 (repeatable)")
    for old in REPLACED:
        p.add_argument(f"--{old.replace('_', '-')}", dest=f"replaced_{old}", action=Replaced,
                       line=lambda value, old=old: replaced_setting(old, as_flag=True))
    g = p.add_argument_group("two-phase recipe (phase 2 continues from phase 1's weights)")
    types = {"lr": float}
    for name, (field, text) in PHASE2.items():
        g.add_argument(f"--{name.replace('_', '-')}", dest=name, type=types.get(field, int), metavar="N", help=text)
    add_config_flags(p)
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> tuple[PretrainConfig, frozenset, dict]:
    """(config, the fields given explicitly, phase-2 changes) from parsed flags over the --config file's settings
    (both count as explicit)."""
    if "model_overrides" in args:
        args.model_overrides = dict(args.model_overrides)
    values, _ = with_config_file(args, "pretrain", [*PretrainConfig.field_section(), *PHASE2])
    if isinstance(values.get("data_dir"), (list, tuple)):  # --data 0.7:A 0.3:B: one blend spec (data/blend.py)
        values["data_dir"] = " ".join(map(str, values["data_dir"]))
    phase2 = {PHASE2[k][0]: values.pop(k) for k in list(values) if k in PHASE2}
    try:
        return PretrainConfig.from_flat(values), frozenset(values), phase2
    except ConfigError as exc:
        raise config_file_error(exc, args) from None


def _resolved(cfg: PretrainConfig, phase2: dict) -> dict:
    """The --print-config / start-of-run view: every field, then the phase-2 settings given."""
    by_field = {field: flag for flag, (field, _) in PHASE2.items()}
    return {**cfg.to_flat(), **{by_field[k]: v for k, v in phase2.items()}}


def run(args: argparse.Namespace) -> int:
    if getattr(args, "print_config", False):
        cfg, _, phase2 = config_from_args(args)
        return print_config(_resolved(cfg, phase2))
    import json

    from bertforge import distributed as D

    try:
        cfg, explicit, phase2 = config_from_args(args)
        if D.rank() == 0:  # stdout: stderr carries the one-line errors
            print(f"bertforge pretrain: config {json.dumps(_resolved(cfg, phase2))}", flush=True)
        from bertforge.training.phases import run_phases

        return run_phases(cfg, explicit, phase2)
    except BaseException as exc:  # noqa: BLE001 - every rank must leave, and with one line
        if isinstance(exc, SystemExit):
            raise
        if D.is_initialized() and D.world_size() > 1:
            print(f"bertforge pretrain: error: rank {D.rank()}: {D.describe_failure(exc)}", file=sys.stderr, flush=True)
            if os.environ.get("BERTFORGE_TRACEBACK"):
                import traceback

                traceback.print_exc()
            D.finish(1)
        raise
