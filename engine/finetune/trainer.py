"""The low-learning-rate finetuning loop (BERT's recipe): AdamW (weight decay 0.01, none on biases / LayerNorm),
lr 2e-5 with 10% linear warmup then linear decay to 0, 3 epochs, dropout 0.1, encoder and head both trained,
gradient clipping at 1.0 (engine.config.finetune.FinetuneConfig holds these defaults). Dev evaluation after every
epoch (or `evals_per_epoch` times); the best state by the dev metric is kept and exported; optional early stopping.
One call of `train_seed` is one seed; engine/finetune/run.py loops over seeds and summarises.

The step goes through `PlainEngine`, which has the calling convention of a DeepSpeed engine (`engine(**batch)`,
`engine.backward(loss)`, `engine.step()`, `engine.module`), so a DeepSpeed engine can replace it unchanged."""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from engine.config import ModelConfig
from engine.config.finetune import FinetuneConfig
from engine.finetune.tasks import TASK_FILE
from engine.hf import export_hf, load_pretrained
from engine.optim import build_optimizer, param_groups, warmup_decay
from engine.training.metrics import MetricsWriter
from engine.training.rng import seed_everything


class PlainEngine:
    """Single-process training step with a DeepSpeed engine's interface."""

    def __init__(self, model: nn.Module, args: FinetuneConfig, total_steps: int):
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


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True, file=sys.stderr)


def train_seed(task, config: ModelConfig, init_dir: Path | None, args: FinetuneConfig, seed: int,
               out_dir: Path | None, log: MetricsWriter | None, echo: Callable[[str], None] = print
               ) -> tuple[dict, nn.Module]:
    """Finetune once with `seed`: `task.build_model(config)`, loaded from `init_dir` unless args.from_scratch.
    Writes JSONL lines to `log` (None: nothing) and, with `out_dir`, the best state to out_dir/seed-N/. Returns
    ({'seed', 'best_step', 'steps', 'train_seconds', 'dev_history', 'dev', 'test'}, the model in its best dev
    state)."""
    seed_everything(seed)
    record = log.write if log is not None else (lambda _: None)
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
                record({"seed": seed, "step": step, "epoch": round(step / steps_per_epoch, 3), "loss": loss.item(),
                        "lr": lr})
            last = step == total_steps
            if task.dev and (step % eval_every == 0 or last):
                metrics = task.evaluate_split(model, "dev", args.eval_batch_size)
                engine.train()
                score = metrics[task.metric]
                history.append({"step": step, "epoch": round(step / steps_per_epoch, 3), task.metric: score})
                record({"seed": seed, "step": step, "epoch": round(step / steps_per_epoch, 3), "split": "dev",
                        **_headline(metrics)})
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
            record({"seed": seed, "step": best_step, "split": split, "final": True, **_headline(metrics)})
    if out_dir is not None:
        save_model(model, out_dir / f"seed-{seed}", init_dir, task, result, args)
    return result, model


def _headline(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def save_model(model: nn.Module, directory: Path, tokenizer_dir: Path | None, task, result: dict,
               args: FinetuneConfig) -> Path:
    """`directory` (atomically): Hugging Face files (+ the tokenizer of `tokenizer_dir`) and TASK_FILE with the
    task's settings, the recipe and the seed's result."""
    id2label = dict(enumerate(task.labels)) if task.labels else None
    info = {**task.info(), "args": asdict(args), "result": {k: v for k, v in result.items() if k != "dev_history"}}
    return export_hf(model, directory, tokenizer_dir, id2label=id2label,
                     extra_files={TASK_FILE: json.dumps(info, indent=2, sort_keys=True) + "\n"})
