"""`bertforge plot RUN_DIR [-o FILE.png]`: a run's curves from its metrics.jsonl, as one PNG (default
RUN_DIR/curves.png). A pretraining run: loss, MLM/NSP accuracy (train and held-out), throughput, learning rate. A
finetune run: training loss and the dev metric per seed, learning rate."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("plot", help="render a pretraining or finetune run's curves to PNG",
                              description=__doc__)
    p.add_argument("run_dir", help="a `bertforge pretrain` or `bertforge finetune` output directory (with "
                                   "metrics.jsonl)")
    p.add_argument("-o", "--out", default=None, help="PNG file (default RUN_DIR/curves.png)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bertforge.training.plot import plot_run

    print(plot_run(args.run_dir, args.out))
    return 0
