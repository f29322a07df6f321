"""`bertforge prepare`: raw corpora -> sharded, memory-mapped indexed dataset (see engine/data/prepare.py)."""
from __future__ import annotations

import json
import os


def register(subparsers) -> None:
    p = subparsers.add_parser("prepare", help="turn raw text into a sharded, memory-mapped indexed dataset")
    p.add_argument("inputs", nargs="+", help="corpus files or folders, or a data set name (wiki, linux-doc)")
    p.add_argument("--tokenizer", required=True, help="tokenizer folder, tokenizer.json or vocab.txt")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--format", default=None, choices=["json", "jsonl", "txt", "txt-file", "rst"],
                   help="force a reader (default: by file suffix; txt-file = one document per file)")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)), help="tokenizer processes")
    p.add_argument("--docs-per-shard", type=int, default=4096)
    p.add_argument("--max-seq-length", type=int, default=512,
                   help="longest sample; longer sentences are split into pieces (or refused with --strict)")
    p.add_argument("--strict", action="store_true", help="refuse a sentence longer than max length")
    p.set_defaults(func=_prepare)


def _prepare(args) -> int:
    from engine.data.fetch import resolve_inputs
    from engine.data.prepare import prepare

    stats = prepare(resolve_inputs(args.inputs), args.tokenizer, args.out, fmt=args.format, workers=args.workers,
                    docs_per_shard=args.docs_per_shard, max_seq_length=args.max_seq_length, strict=args.strict)
    for w in stats.warnings:
        print(f"warning: {w}")
    summary = {k: v for k, v in vars(stats).items() if k != "warnings"}
    print(json.dumps(summary))
    return 0
