"""The low-learning-rate finetuning loop (BERT's recipe, as in the lecture): AdamW (weight decay 0.01, none on
biases / LayerNorm), lr 2e-5 with 10% linear warmup then linear decay to 0, 3 epochs, dropout 0.1, encoder and
head both trained, gradient clipping at 1.0. Dev evaluation after every epoch (or `evals_per_epoch` times); the
best state by the dev metric is kept and exported; optional early stopping; several seeds in one call with
mean ± std, because low-LR finetuning is noisy.

The step goes through `PlainEngine`, which has the calling convention of a DeepSpeed engine (`engine(**batch)`,
`engine.backward(loss)`, `engine.step()`, `engine.module`), so a DeepSpeed engine can replace it unchanged."""
from __future__ import annotations

import copy
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from engine.config import ModelConfig
from engine.finetune.metrics import mean_std
from engine.finetune.tasks import TASK_FILE
from engine.hf import export_hf, load_pretrained
from engine.optim import build_optimizer, param_groups, warmup_decay


@dataclass
class FinetuneArgs:
    lr: float = 2e-5
    """Peak learning rate (BERT finetuning: 1e-5 ... 5e-5)."""
    epochs: float = 3
    """Passes over the training data (2-4 for BERT finetuning)."""
    batch_size: int = 32
    eval_batch_size: int = 64
    warmup_ratio: float = 0.1
    """Fraction of the optimizer steps spent in linear warmup; then linear decay to 0."""
    weight_decay: float = 0.01
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    """Clip the global gradient norm (0 = off)."""
    evals_per_epoch: int = 1
    early_stopping: int = 0
    """Stop after this many dev evaluations without improvement (0 = never)."""
    seeds: list[int] = field(default_factory=lambda: [1])
    from_scratch: bool = False
    """Random initialisation of the same architecture instead of the pretrained weights (a baseline)."""
    threads: int = 0
    """torch intra-op threads (0 = leave torch's default)."""
    progress: bool = True
    unpadded: bool = True
    """Train on concatenated tokens + cu_seqlens (no padding in the dense layers); False pads each batch."""

    def __post_init__(self) -> None:
        if not self.lr > 0 or not self.epochs > 0 or self.batch_size < 1 or not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"invalid finetuning arguments: lr={self.lr}, epochs={self.epochs}, "
                             f"batch_size={self.batch_size}, warmup_ratio={self.warmup_ratio}")
        if not self.seeds:
            raise ValueError("need at least one seed")


class PlainEngine:
    """Single-process training step with a DeepSpeed engine's interface."""

    def __init__(self, model: nn.Module, args: FinetuneArgs, total_steps: int):
        self.module = model
        self.optimizer = build_optimizer("adamw", param_groups(model, args.weight_decay), lr=args.lr,
                                         eps=args.adam_eps)
        self.scheduler = warmup_decay(self.optimizer, int(args.warmup_ratio * total_steps), total_steps, "linear")
        self.max_grad_norm = args.max_grad_norm

    def __call__(self, **batch):
        return self.module(**batch)

    def train(self) -> None:
        self.module.train()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> None:
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def get_lr(self) -> float:
        return self.scheduler.get_last_lr()[0]


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass


class MetricsLog:
    """Appends one JSON object per line (flushed), beside the human log on stdout."""

    def __init__(self, path: Path | None):
        self.fh = open(path, "a", encoding="utf-8") if path else None

    def write(self, **record) -> None:
        if self.fh:
            self.fh.write(json.dumps(record, sort_keys=True) + "\n")
            self.fh.flush()

    def close(self) -> None:
        if self.fh:
            self.fh.close()


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True, file=sys.stderr)


def train_seed(task, config: ModelConfig, init_dir: Path | None, args: FinetuneArgs, seed: int,
               out_dir: Path | None, log: MetricsLog, echo: Callable[[str], None] = print) -> tuple[dict, nn.Module]:
    """Finetune once with `seed`; returns ({'seed', 'dev', 'test', 'best_step', 'train_seconds', ...}, the model
    in its best dev state)."""
    set_seed(seed)
    model = task.build_model(config)
    if init_dir is not None and not args.from_scratch:
        load_pretrained(init_dir, model)
    n = len(task.train)
    steps_per_epoch = math.ceil(n / args.batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * args.epochs))
    engine = PlainEngine(model, args, total_steps)
    eval_every = max(1, steps_per_epoch // max(1, args.evals_per_epoch))
    gen = torch.Generator().manual_seed(seed)
    best, best_state, best_step, bad_evals, history = -math.inf, None, 0, 0, []
    step, t0, stop = 0, time.perf_counter(), False
    bar = _progress(total_steps, f"{task.name} seed {seed}", args.progress)
    epoch = 0
    while step < total_steps and not stop:
        engine.train()
        order = torch.randperm(n, generator=gen).tolist()
        for k in range(0, n, args.batch_size):
            batch = task.collate([task.train[i] for i in order[k: k + args.batch_size]], unpadded=args.unpadded)
            loss = engine(**batch).loss
            engine.backward(loss)
            lr = engine.get_lr()
            engine.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if step % 10 == 0 or step == 1:
                log.write(seed=seed, step=step, epoch=round(step / steps_per_epoch, 3), loss=loss.item(), lr=lr)
            last = step == total_steps
            if task.dev and (step % eval_every == 0 or last):
                metrics = task.evaluate_split(model, "dev", args.eval_batch_size)
                engine.train()
                score = metrics[task.metric]
                history.append({"step": step, "epoch": round(step / steps_per_epoch, 3), task.metric: score})
                log.write(seed=seed, step=step, epoch=round(step / steps_per_epoch, 3), split="dev",
                          **_headline(metrics))
                echo(f"seed {seed} step {step}/{total_steps} epoch {step / steps_per_epoch:.2f}: "
                     f"dev {task.metric} {score:.4f}")
                if score > best:
                    best, best_step, bad_evals = score, step, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    bad_evals += 1
                    if args.early_stopping and bad_evals >= args.early_stopping:
                        echo(f"seed {seed}: early stop at step {step} (no dev improvement in {bad_evals} evals)")
                        stop = True
            if last or stop:
                break
        epoch += 1
    bar.close()
    train_seconds = time.perf_counter() - t0
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_step = step
    result = {"seed": seed, "best_step": best_step, "steps": step, "train_seconds": round(train_seconds, 2),
              "dev_history": history}
    for split in ("dev", "test"):
        if getattr(task, split):
            metrics = task.evaluate_split(model, split, args.eval_batch_size)
            result[split] = metrics
            log.write(seed=seed, step=best_step, split=split, final=True, **_headline(metrics))
    if out_dir is not None:
        save_model(model, out_dir / f"seed-{seed}", init_dir, task, result, args)
    return result, model


def _headline(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def save_model(model: nn.Module, directory: Path, tokenizer_dir: Path | None, task, result: dict,
               args: FinetuneArgs) -> Path:
    id2label = dict(enumerate(task.labels)) if task.labels else None
    info = {**task.info(), "args": asdict(args), "result": {k: v for k, v in result.items() if k != "dev_history"}}
    return export_hf(model, directory, tokenizer_dir, id2label=id2label,
                     extra_files={TASK_FILE: json.dumps(info, indent=2, sort_keys=True) + "\n"})


def run(task, config: ModelConfig, init_dir: Path | None, args: FinetuneArgs, out_dir: Path | None,
        echo: Callable[[str], None] = print) -> dict:
    """All seeds; writes out_dir/metrics.jsonl, out_dir/seed-N/ (HF format, best dev state) and summary.json."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(out_dir / "metrics.jsonl" if out_dir else None)
    config = config.replace(kernels="none") if config.kernels != "none" and not torch.cuda.is_available() else config
    runs = []
    try:
        for seed in args.seeds:
            runs.append(train_seed(task, config, init_dir, args, seed, out_dir, log, echo)[0])
            r = runs[-1]
            echo(f"seed {seed}: " + ", ".join(f"{split} {task.metric} {r[split][task.metric]:.4f}"
                                             for split in ("dev", "test") if split in r)
                 + f" ({r['train_seconds']:.0f}s)")
    finally:
        log.close()
    summary = {"task": task.name, "metric": task.metric, "seeds": args.seeds, "runs": runs, "from_scratch":
               args.from_scratch, "init": str(init_dir) if init_dir else None}
    for split in ("dev", "test"):
        keys = [k for k, v in runs[0].get(split, {}).items() if isinstance(v, (int, float)) and k != "n"]
        if keys:
            summary[split] = {k: dict(zip(("mean", "std"), mean_std([r[split][k] for r in runs]))) for k in keys}
    summary["train_seconds"] = dict(zip(("mean", "std"), mean_std([r["train_seconds"] for r in runs])))
    if out_dir is not None:
        tmp = out_dir / ".summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, out_dir / "summary.json")
    return summary
