"""`bertforge prepare`: raw corpora -> sharded, memory-mapped indexed dataset (see engine/data/prepare.py).
Every PrepareConfig field is a flag (engine/config/prepare.py)."""
from __future__ import annotations

import argparse
import json
import os

from bertforge.commands.flags import add_config_flags, add_dataclass_flags, print_config, with_config_file
from bertforge.config.docs import field_docs
from bertforge.config.prepare import PrepareConfig
from bertforge.errors import ConfigError

HAND_MADE = {"shard_bytes"}  # takes sizes such as 64M
REQUIRED = {"inputs": "INPUTS", "tokenizer": "--tokenizer", "out": "--out"}


def register(subparsers) -> None:
    p = subparsers.add_parser("prepare", help="turn raw text into a sharded, memory-mapped indexed dataset",
                              description=__doc__, argument_default=argparse.SUPPRESS,
                              usage="bertforge prepare INPUTS... --tokenizer DIR --out DATA [options]  (or --config "
                                    "FILE)")
    # inputs, --tokenizer and --out are required, on the command line or in the --config file
    p.add_argument("inputs", nargs="*", help="corpus files or folders, or a data set name (wiki, linux-doc)")
    p.add_argument("--tokenizer", help="tokenizer folder, tokenizer.json or vocab.txt (required)")
    p.add_argument("--out", help="output dataset folder (shared by all parts of a --part prepare; required)")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    add_dataclass_flags(p, PrepareConfig, skip=HAND_MADE, defaults={"workers": cores})
    p.add_argument("--shard-bytes", dest="shard_bytes", metavar="SIZE",
                   help=field_docs(PrepareConfig)["shard_bytes"] + " (default: 16M)")
    add_config_flags(p)
    p.set_defaults(func=_prepare, default_workers=cores)


def _prepare(args) -> int:
    if "inputs" in args and not args.inputs:
        del args.inputs  # nargs="*" stores [] when none are given: the --config file may name them
    settings, _ = with_config_file(args, "prepare", [*PrepareConfig.__dataclass_fields__, *REQUIRED])
    settings.setdefault("workers", args.default_workers)
    missing = [REQUIRED[name] for name in REQUIRED if not settings.get(name)]
    if missing:
        raise ConfigError(f"{', '.join(missing)} required (on the command line or in --config)")
    inputs, tokenizer, out = (settings.pop(name) for name in REQUIRED)
    config = PrepareConfig(**settings)
    resolved = {"inputs": list(inputs), "tokenizer": tokenizer, "out": out, **vars(config)}
    if getattr(args, "print_config", False):
        return print_config(resolved)
    from bertforge.data.fetch import resolve_inputs
    from bertforge.data.prepare import prepare

    print(f"bertforge prepare: config {json.dumps(resolved)}", flush=True)  # stderr carries the one-line errors
    stats = prepare(resolve_inputs(list(inputs)), tokenizer, out, config)
    for w in stats.warnings:
        print(f"warning: {w}")
    if not stats.complete:
        print(f"part {stats.part} done ({stats.tasks} of {stats.tasks_total} tasks); the dataset is complete when "
              f"every part is")
    print(json.dumps({k: v for k, v in vars(stats).items() if k != "warnings"}))
    return 0
