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

from bertforge.commands.flags import add_dataclass_flags, given
from bertforge.config import ModelConfig
from bertforge.config.docs import field_docs
from bertforge.config.pretrain import SECTIONS, PretrainConfig

RENAMED = {"data_dir": "data", "token_budget": "tokens"}
HAND_MADE = {"model_overrides"}  # --model FIELD=VALUE (repeatable)
PHASE2 = {  # phase-2 flag -> (PretrainConfig field, help)
    "phase2_steps": ("steps", "run phase 2 for N steps after phase 1"),
    "phase2_tokens": ("token_budget", "phase 2 token budget instead of steps"),
    "phase2_max_seq_length": ("max_seq_length", "phase 2 tokens per sequence (default 512)"),
    "phase2_micro_batch": ("micro_batch", "phase 2 micro batch (default: phase 1's)"),
    "phase2_global_batch": ("global_batch", "phase 2 global batch (default: phase 1's)"),
    "phase2_lr": ("lr", "phase 2 peak learning rate (default: phase 1's)"),
    "phase2_warmup_steps": ("warmup_steps", "phase 2 warmup steps (default: --warmup-ratio of its steps)"),
}


def _model_override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    types = {f.name: f.type for f in dataclasses.fields(ModelConfig)}
    if key not in types:
        raise argparse.ArgumentTypeError(f"unknown model field {key!r}; known: {', '.join(types)}")
    kind = {"int": int, "float": float, "str": str}[str(types[key])]
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
        if section == "model":
            g.add_argument("--model", dest="model_overrides", type=_model_override, action="append",
                           metavar="FIELD=VALUE", help="override a ModelConfig field of the preset, e.g. "
                           "--model num_hidden_layers=4 (repeatable)")
    g = p.add_argument_group("two-phase recipe (phase 2 continues from phase 1's weights)")
    types = {"lr": float}
    for name, (field, text) in PHASE2.items():
        g.add_argument(f"--{name.replace('_', '-')}", dest=name, type=types.get(field, int), metavar="N", help=text)
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> tuple[PretrainConfig, frozenset, dict]:
    """(config, the fields given explicitly, phase-2 changes) from parsed flags."""
    values = given(args, PretrainConfig.field_section())
    if "model_overrides" in values:
        values["model_overrides"] = dict(values["model_overrides"])
    phase2 = {PHASE2[k][0]: v for k, v in given(args, PHASE2).items()}
    return PretrainConfig.from_flat(values), frozenset(values), phase2


def run(args: argparse.Namespace) -> int:
    from bertforge import distributed as D

    try:
        cfg, explicit, phase2 = config_from_args(args)
        from bertforge.training.phases import run_phases

        return run_phases(cfg, explicit, phase2)
    except BaseException as exc:  # noqa: BLE001 - every rank must leave, and with one line
        if isinstance(exc, SystemExit):
            raise
        if D.is_initialized() and D.world_size() > 1:
            print(f"bertforge: error: rank {D.rank()}: {D.describe_failure(exc)}", file=sys.stderr, flush=True)
            if os.environ.get("BERTFORGE_TRACEBACK"):
                import traceback

                traceback.print_exc()
            D.finish(1)
        raise
