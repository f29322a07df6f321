"""Training curves of a run (loss, MLM/NSP accuracy against the unigram baseline, throughput, learning rate) from
its metrics.jsonl, as one PNG (matplotlib, Agg backend)."""
from __future__ import annotations

import sys
from pathlib import Path

from bertforge.errors import ConfigError, DataError
from bertforge.io import atomic_file


def plot_run(run_dir: str | Path, out: str | Path | None = None, echo=None) -> Path:
    """Render RUN_DIR/metrics.jsonl to `out` (default RUN_DIR/curves.png), written atomically. Returns the path.
    Raises DataError when the run has no metrics or no training records (or is a finetune run); ConfigError without
    matplotlib; `echo` (default: stderr) gets a warning line for a cut last line of metrics.jsonl, which is left out."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise ConfigError("`bertforge plot` needs matplotlib, an optional dependency: pip install "
                          "'bertforge[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bertforge.train.metrics import read_metrics

    notes: list[str] = []
    records = read_metrics(run_dir, notes)
    if any("seed" in r for r in records) or (Path(run_dir) / "summary.json").is_file():
        raise DataError("a `bertforge finetune` run: `bertforge plot` draws pretraining runs only (a finetune run's "
                        "curves are in its metrics.jsonl and, with the [tensorboard] extra, in tensorboard/)",
                        str(run_dir))
    for note in notes:
        (echo or (lambda m: print(m, file=sys.stderr)))("warning: " + note)
    train = [r for r in records if r.get("split") == "train"]
    evals = [r for r in records if r.get("split") == "eval"]
    if not train:
        raise DataError("no training records to plot", str(Path(run_dir) / "metrics.jsonl"))

    def series(rows, key):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    ax = axes[0][0]
    tasks = [t for t in ("nsp", "sop") if any(f"{t}_acc" in r for r in train)]  # none for MLM-only runs
    for key in ("loss", "mlm_loss", *(f"{t}_loss" for t in tasks)):
        ax.plot(*series(train, key), label=f"train {key}")
    if evals:
        ax.plot(*series(evals, "loss"), "o-", label="held-out loss")
    ax.set(title="loss", xlabel="step")
    ax.legend()
    ax = axes[0][1]
    ax.plot(*series(train, "mlm_acc"), label="train MLM acc")
    for t in tasks:
        ax.plot(*series(train, f"{t}_acc"), label=f"train {t.upper()} acc")
    if evals:
        ax.plot(*series(evals, "mlm_acc"), "o-", label="held-out MLM acc")
        for t in tasks:
            ax.plot(*series(evals, f"{t}_acc"), "o-", label=f"held-out {t.upper()} acc")
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
    with atomic_file(out, "wb") as fh:
        fig.savefig(fh, dpi=100, format=out.suffix.lstrip(".") or "png")
    plt.close(fig)
    return out
