"""`bertforge pretrain`: MLM + NSP pretraining on DeepSpeed. A preset plus typed overrides; every TrainConfig field
is a flag (--micro-batch, --zero-stage, ...), with its docstring as help. Flags given explicitly may not be
contradicted by --deepspeed-config. `--phase2-steps N` runs BERT's two-phase recipe in one command: phase 1 into
OUTPUT/phase1, then phase 2 at --phase2-seq-len (512) into OUTPUT/phase2 starting from phase 1's weights.

Launch it plainly, under `torchrun` or under `deepspeed` (docs/launch.md)."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from pathlib import Path

from engine.config import ModelConfig
from engine.training.config import TrainConfig, field_docs

# TrainConfig fields that get a hand-made flag (or none)
SPECIAL = {"model_overrides", "betas", "dropout", "data_dir", "token_budget", "resume", "progress", "export_hf",
           "unpadded", "whole_word_masking", "pack", "compile"}
PHASE2 = ("steps", "seq_len", "micro_batch", "global_batch", "lr", "warmup_steps", "token_budget")


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


def _betas(text: str) -> tuple[float, float]:
    try:
        b1, b2 = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected BETA1,BETA2, got {text!r}") from None
    return b1, b2


def register(subparsers) -> None:
    p = subparsers.add_parser("pretrain", help="MLM+NSP pretraining on DeepSpeed (ZeRO 0-3, bf16/fp16/fp32)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              argument_default=argparse.SUPPRESS)
    docs = field_docs()
    p.add_argument("--data", dest="data_dir", metavar="DIR", help=docs["data_dir"])
    p.add_argument("--synthetic-vocab", type=int, metavar="V",
                   help="train on deterministic synthetic batches with a V-token vocabulary instead of --data "
                        "(tests, benchmarks)")
    for f in dataclasses.fields(TrainConfig):
        if f.name in SPECIAL:
            continue
        kind = {"int": int, "float": float, "str": str}[str(f.type)]
        p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, metavar=f.name.upper(), help=docs[f.name])
    p.add_argument("--tokens", dest="token_budget", type=int, metavar="N", help=docs["token_budget"])
    p.add_argument("--model", dest="model_overrides", type=_model_override, action="append", metavar="FIELD=VALUE",
                   help="override a ModelConfig field of the preset, e.g. --model num_hidden_layers=4 (repeatable)")
    p.add_argument("--betas", type=_betas, metavar="B1,B2", help=docs["betas"])
    p.add_argument("--dropout", type=float, help=docs["dropout"])
    p.add_argument("--resume", action="store_true", help=docs["resume"])
    p.add_argument("--unpadded", action="store_true", help=docs["unpadded"])
    p.add_argument("--whole-word-masking", action="store_true", help=docs["whole_word_masking"])
    p.add_argument("--pack", action="store_true", help=docs["pack"])
    p.add_argument("--compile", action="store_true", help=docs["compile"])
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--no-export-hf", dest="export_hf", action="store_false", help="skip the final HF export")
    g = p.add_argument_group("two-phase recipe (phase 2 continues from phase 1's weights)")
    g.add_argument("--phase2-steps", type=int, metavar="N", help="run phase 2 for N steps after phase 1")
    g.add_argument("--phase2-tokens", type=int, metavar="N", help="phase 2 token budget instead of steps")
    g.add_argument("--phase2-seq-len", type=int, metavar="S", help="phase 2 sequence length (default 512)")
    g.add_argument("--phase2-micro-batch", type=int, metavar="B", help="phase 2 micro batch (default: phase 1's)")
    g.add_argument("--phase2-global-batch", type=int, metavar="B", help="phase 2 global batch (default: phase 1's)")
    g.add_argument("--phase2-lr", type=float, metavar="LR", help="phase 2 peak learning rate (default: phase 1's)")
    g.add_argument("--phase2-warmup-steps", type=int, metavar="N", help="phase 2 warmup steps")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, frozenset, dict]:
    given = dict(vars(args))
    given.pop("func", None)
    given.pop("command", None)
    phase2 = {k[len("phase2_"):]: given.pop(k) for k in list(given) if k.startswith("phase2_")}
    synthetic = given.pop("synthetic_vocab", None)
    if "model_overrides" in given:
        given["model_overrides"] = dict(given["model_overrides"])
    cfg = TrainConfig(**given)
    if synthetic is None and not cfg.data_dir:
        from engine.cli import UserError

        raise UserError("pretrain needs --data DIR (a `bertforge prepare` output) or --synthetic-vocab V")
    if synthetic is not None:
        os.environ["BERTFORGE_SYNTHETIC_VOCAB"] = str(synthetic)
    return cfg, frozenset(given), phase2


def run(args: argparse.Namespace) -> int:
    from engine.training import distributed as D

    try:
        cfg, explicit, phase2 = config_from_args(args)
        from engine.training.phases import run_phases

        return run_phases(cfg, explicit, phase2)
    except BaseException as exc:  # noqa: BLE001 - every rank must leave, and with one line
        if isinstance(exc, SystemExit):
            raise
        if D.is_initialized() and D.world_size() > 1:
            from engine.training.distributed import describe_failure

            print(f"bertforge: error: rank {D.rank()}: {describe_failure(exc)}", file=sys.stderr, flush=True)
            if os.environ.get("BERTFORGE_TRACEBACK"):
                import traceback

                traceback.print_exc()
            D.finish(1)
        raise
