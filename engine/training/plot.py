"""Curves of a run from its metrics.jsonl, as one PNG (matplotlib, Agg backend).

- a `bertforge pretrain` run: loss, MLM/NSP (SOP) accuracy against the unigram baseline, throughput, learning rate
- a `bertforge finetune` run (records carry "seed"): training loss per step and the dev metric per evaluation, one
  curve per seed (the best dev evaluation of each seed marked), and the learning rate; the headline metric is
  summary.json's "metric" (while the run is unfinished: the first of accuracy / f1 / mlm_acc in its dev records)
Anything else (no training records, a finetune run without a dev metric to name) is refused in one line."""
from __future__ import annotations

import json
from pathlib import Path

from bertforge.errors import ConfigError, DataError
from bertforge.io import atomic_file
from bertforge.log import get_logger

logger = get_logger(__name__)

HEADLINES = ("accuracy", "f1", "mlm_acc")  # classify, ner, mlm: each task's headline metric (summary.json "metric")


def plot_run(run_dir: str | Path, out: str | Path | None = None, echo=None) -> Path:
    """Render RUN_DIR/metrics.jsonl to `out` (default RUN_DIR/curves.png), written atomically. Returns the path.
    Raises DataError when the run has no metrics, no training records or (finetuning) no dev metric to name;
    ConfigError without matplotlib; `echo` (default: the logger's warning) gets a warning line for a cut last line of
    metrics.jsonl, which is left out."""
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
    for note in notes:
        (echo or logger.warning)("warning: " + note)
    summary = Path(run_dir) / "summary.json"
    if any("seed" in r for r in records) or summary.is_file():
        fig = finetune_figure(records, _read_summary(summary), Path(run_dir) / "metrics.jsonl")
    else:
        fig = pretrain_figure(records, Path(run_dir) / "metrics.jsonl")
    out = Path(out) if out else Path(run_dir) / "curves.png"
    with atomic_file(out, "wb") as fh:
        fig.savefig(fh, dpi=100, format=out.suffix.lstrip(".") or "png")
    plt.close(fig)
    return out


def _read_summary(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"not valid JSON ({exc})", str(path)) from None
    return summary if isinstance(summary, dict) else {}


def _series(rows: list[dict], key: str) -> tuple[list, list]:
    pts = [(r["step"], r[key]) for r in rows if key in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def pretrain_figure(records: list[dict], where: Path):
    """A 2 x 2 figure: loss, accuracy (train, held-out, unigram baseline), throughput, learning rate."""
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("split") == "train"]
    evals = [r for r in records if r.get("split") == "eval"]
    if not train:
        raise DataError("no training records to plot", str(where))
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    ax = axes[0][0]
    tasks = [t for t in ("nsp", "sop") if any(f"{t}_acc" in r for r in train)]  # none for MLM-only runs
    for key in ("loss", "mlm_loss", *(f"{t}_loss" for t in tasks)):
        ax.plot(*_series(train, key), label=f"train {key}")
    if evals:
        ax.plot(*_series(evals, "loss"), "o-", label="held-out loss")
    ax.set(title="loss", xlabel="step")
    ax.legend()
    ax = axes[0][1]
    ax.plot(*_series(train, "mlm_acc"), label="train MLM acc")
    for t in tasks:
        ax.plot(*_series(train, f"{t}_acc"), label=f"train {t.upper()} acc")
    if evals:
        ax.plot(*_series(evals, "mlm_acc"), "o-", label="held-out MLM acc")
        for t in tasks:
            ax.plot(*_series(evals, f"{t}_acc"), "o-", label=f"held-out {t.upper()} acc")
        ax.plot(*_series(evals, "mlm_unigram_acc"), "--", label="unigram baseline")
    ax.set(title="accuracy", xlabel="step", ylim=(0, 1))
    ax.legend()
    ax = axes[1][0]
    ax.plot(*_series(train, "tokens_per_s"), label="tokens/s")
    ax.set(title="throughput", xlabel="step", ylabel="tokens/s")
    ax = axes[1][1]
    ax.plot(*_series(train, "lr"), label="lr")
    ax.set(title="learning rate", xlabel="step")
    return fig


def finetune_figure(records: list[dict], summary: dict, where: Path):
    """A 1 x 3 figure of a finetune run: training loss per step, dev `metric` per evaluation (best marked), learning
    rate; one curve per seed. The title gives the task and the test metric (mean ± std over seeds) when known."""
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("split") == "train" and "seed" in r]
    dev = [r for r in records if r.get("split") == "dev" and "seed" in r and not r.get("final")]
    if not train:
        raise DataError("a `bertforge finetune` run with no training records to plot", str(where))
    metric = summary.get("metric") or next((m for m in HEADLINES if any(m in r for r in dev)), None)
    if metric is None:
        raise DataError("a `bertforge finetune` run with no dev metric to plot (no dev evaluation yet, and no "
                        "summary.json naming its metric)", str(where))
    seeds = sorted({r["seed"] for r in train}, key=str)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), constrained_layout=True)
    for seed in seeds:
        mine = [r for r in train if r["seed"] == seed]
        axes[0].plot(*_series(mine, "loss"), label=f"seed {seed}")
        steps, values = _series([r for r in dev if r["seed"] == seed], metric)
        line, = axes[1].plot(steps, values, "o-", label=f"seed {seed}")
        if values:
            best = max(range(len(values)), key=values.__getitem__)
            axes[1].plot([steps[best]], [values[best]], "*", ms=14, color=line.get_color())
        axes[2].plot(*_series(mine, "lr"), label=f"seed {seed}")
    axes[0].set(title="training loss", xlabel="step")
    axes[1].set(title=f"dev {metric} (best: *)", xlabel="step")
    axes[2].set(title="learning rate", xlabel="step")
    for ax in axes:
        ax.legend()
    test = summary.get("test", {}).get(metric)
    title = f"bertforge finetune {summary.get('task', '')}".rstrip()
    if isinstance(test, dict) and "mean" in test:
        title += f": test {metric} {test['mean']:.4f} ± {test.get('std', 0.0):.4f} over {len(seeds)} seed(s)"
    fig.suptitle(title)
    return fig
