"""`bertforge plot RUN_DIR [-o FILE.png]`: the run's training loss, MLM/NSP accuracy (train and held-out),
learning rate and throughput from metrics.jsonl, as one PNG (default RUN_DIR/curves.png)."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("plot", help="render a run's loss/accuracy/throughput curves to PNG",
                              description=__doc__)
    p.add_argument("run_dir", help="a `bertforge pretrain` output directory (with metrics.jsonl)")
    p.add_argument("-o", "--out", default=None, help="PNG file (default RUN_DIR/curves.png)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bertforge.training.plot import plot_run

    print(plot_run(args.run_dir, args.out))
    return 0
