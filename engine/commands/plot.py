"""`bertforge plot RUN_DIR [-o FILE.png]`: the run's training loss, MLM/NSP accuracy (train and held-out),
learning rate and throughput from metrics.jsonl, as one PNG (default RUN_DIR/curves.png)."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("plot", help="render a run's loss/accuracy/throughput curves to PNG",
                              description=__doc__)
    p.add_argument("run_dir", help="a `bertforge pretrain` output directory (with metrics.jsonl)")
    p.add_argument("-o", "--out", default=None, help="PNG file (default RUN_DIR/curves.png)")
    p.set_defaults(func=run)


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from engine.training.metrics import read_metrics

    records = read_metrics(run_dir)
    train = [r for r in records if r.get("split") == "train"]
    evals = [r for r in records if r.get("split") == "eval"]
    if not train:
        raise ValueError(f"{Path(run_dir) / 'metrics.jsonl'}: no training records to plot")

    def series(rows, key):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    ax = axes[0][0]
    for key in ("loss", "mlm_loss", "nsp_loss"):
        ax.plot(*series(train, key), label=f"train {key}")
    if evals:
        ax.plot(*series(evals, "loss"), "o-", label="held-out loss")
    ax.set(title="loss", xlabel="step")
    ax.legend()
    ax = axes[0][1]
    ax.plot(*series(train, "mlm_acc"), label="train MLM acc")
    ax.plot(*series(train, "nsp_acc"), label="train NSP acc")
    if evals:
        ax.plot(*series(evals, "mlm_acc"), "o-", label="held-out MLM acc")
        ax.plot(*series(evals, "nsp_acc"), "o-", label="held-out NSP acc")
        ax.plot(*series(evals, "mlm_unigram_acc"), "--", label="unigram baseline")
    ax.set(title="accuracy", xlabel="step", ylim=(0, 1))
    ax.legend()
    ax = axes[1][0]
    ax.plot(*series(train, "tokens_per_s"), label="tokens/s")
    ax.set(title="throughput", xlabel="step", ylabel="tokens/s")
    ax = axes[1][1]
    ax.plot(*series(train, "lr"), label="lr")
    ax.set(title="learning rate", xlabel="step")
    out = Path(out) if out else Path(run_dir) / "curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
    return out


def run(args: argparse.Namespace) -> int:
    print(plot_run(args.run_dir, args.out))
    return 0
