"""`bertforge prepare`: raw corpora -> sharded, memory-mapped indexed dataset (see engine/data/prepare.py).
Every PrepareConfig field is a flag (engine/config/prepare.py)."""
from __future__ import annotations

import argparse
import json
import os

from bertforge.commands.flags import add_dataclass_flags, given
from bertforge.config.docs import field_docs
from bertforge.config.prepare import PrepareConfig

HAND_MADE = {"shard_bytes"}  # takes sizes such as 64M


def register(subparsers) -> None:
    p = subparsers.add_parser("prepare", help="turn raw text into a sharded, memory-mapped indexed dataset",
                              description=__doc__, argument_default=argparse.SUPPRESS)
    p.add_argument("inputs", nargs="+", help="corpus files or folders, or a data set name (wiki, linux-doc)")
    p.add_argument("--tokenizer", required=True, help="tokenizer folder, tokenizer.json or vocab.txt")
    p.add_argument("--out", required=True, help="output dataset folder (shared by all parts of a --part prepare)")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    add_dataclass_flags(p, PrepareConfig, skip=HAND_MADE, defaults={"workers": cores})
    p.add_argument("--shard-bytes", dest="shard_bytes", metavar="SIZE",
                   help=field_docs(PrepareConfig)["shard_bytes"] + " (default: 16M)")
    p.set_defaults(func=_prepare, default_workers=cores)


def _prepare(args) -> int:
    from bertforge.data.fetch import resolve_inputs
    from bertforge.data.prepare import prepare

    settings = given(args, [f for f in PrepareConfig.__dataclass_fields__])
    settings.setdefault("workers", args.default_workers)
    stats = prepare(resolve_inputs(args.inputs), args.tokenizer, args.out, PrepareConfig(**settings))
    for w in stats.warnings:
        print(f"warning: {w}")
    if not stats.complete:
        print(f"part {stats.part} done ({stats.tasks} of {stats.tasks_total} tasks); the dataset is complete when "
              f"every part is")
    print(json.dumps({k: v for k, v in vars(stats).items() if k != "warnings"}))
    return 0
