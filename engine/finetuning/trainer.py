"""Finetuning (BERT's low-learning-rate recipe) as a task of the one training runtime (`bertforge.train.trainer`,
the loop, DeepSpeed engine, skip gate, preemption and checkpoints that pretraining uses): AdamW (weight
decay 0.01, none on biases / LayerNorm), lr 2e-5 with 10% linear warmup then linear decay to 0, 3 epochs, dropout
0.1, encoder and head both trained, gradient clipping at 1.0 (bertforge.config.finetune holds these defaults). The
model is wrapped by the runtime through engine/parallelize.py only: device placement, bf16 / fp16 (dynamic loss scaling), ZeRO 0-3,
gradient accumulation, clipping, compile, activation checkpointing; kernels come with the model config.

One optimizer step = `accum` micro batches per rank; global micro batch k of the even distributed order
(engine/data/sampler.py) runs on rank k % world, so no rank runs out of batches first (no hang at the end of an epoch,
whatever the data size) and 1 rank x accumulation 2n takes the same steps as 2 ranks x n. The encoder's dropout masks
and the head's are keyed per example (dropout_ids from the seed, the example's epoch and its index, as in
pretraining), so those steps also draw the same masks. Every step has one collective (after the backward): the ranks
agree on a non-finite loss (the step is skipped everywhere) and on a SIGTERM (checkpoint, exit 143). Dev evaluation
(sharded, engine/finetuning/evaluation.py) after every epoch or `evals_per_epoch` times; every evaluation checkpoints:
an improvement into the best-state checkpoints, otherwise into the resume checkpoints, so the best dev state is never
lost and a resume continues from the newest of the two with the identical loss sequence. At the end the best state is
loaded, dev and test are scored, and rank 0 exports its fp32 weights (the masters under bf16 / fp16) as a Hugging Face
directory.

Layout of a seed's state while it runs (removed when the seed is exported):
  OUT/state/seed-N/checkpoints/       resume checkpoints (engine/train/checkpoint.py; the newest kept)
  OUT/state/seed-N/best/checkpoints/  the best dev state (the newest kept)"""
from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from bertforge import deepspeed as ds
from bertforge import distributed as D
from bertforge.config import ModelConfig
from bertforge.config.finetune import FinetuneConfig, ParallelConfig
from bertforge.data.sampler import MicroBatchSampler
from bertforge.data.splitmix import sample_dropout_ids
from bertforge.errors import CheckpointError, ConfigError
from bertforge.finetuning.evaluation import evaluate_split, to_device
from bertforge.finetuning.tasks import TASK_FILE
from bertforge.hf import TIED_OPTIONAL, export_hf, load_pretrained
from bertforge.log import result_echo
from bertforge.model import reinit_top_layers
from bertforge.model_card import finetune_card
from bertforge.optim import layerwise_param_groups
from bertforge.train.checkpoint import CheckpointManager
from bertforge.train.metrics import MetricsWriter
from bertforge.train.token_loss import step_num_items
from bertforge.train.trainer import ResumePoint, RunSpec, Trainer, TrainTask

ECHO = result_echo(__name__)  # result lines (stdout under the default log handler; a notebook can route them)


def state_dir(out_dir: Path, seed: int) -> Path:
    """Where a seed's checkpoints live while it runs."""
    return out_dir / "state" / f"seed-{seed}"


@dataclass
class LossWindow:
    """Summed micro-batch losses of the applied steps since the last metrics line (on the device)."""
    loss: torch.Tensor              # () float64
    steps: int = 0                  # applied steps (the same on every rank)

    def add(self, other: "LossWindow") -> None:
        self.loss += other.loss
        self.steps += other.steps

    def state(self, dev: torch.device, per_step: int) -> dict | None:
        """The window so far for a checkpoint's meta.json: its loss summed over all ranks (a collective; None when
        empty: steps is the same on every rank). `per_step`: micro batches per step, all ranks."""
        if not self.steps:
            return None
        total = D.all_reduce_sum([float(self.loss)], dev)[0]
        return {"loss": total, "steps": self.steps, "micro_batches_per_step": per_step}

    @classmethod
    def from_state(cls, state: dict, dev: torch.device, per_step: int, holder: bool) -> "LossWindow":
        """A window holding a `state()` read back: the loss on the `holder` rank (0 elsewhere), rescaled to
        `per_step` micro batches per step; steps on every rank. ValueError / KeyError / TypeError when malformed."""
        loss = float(state["loss"]) * per_step / int(state["micro_batches_per_step"]) if holder else 0.0
        steps = int(state["steps"])
        if steps < 1:
            raise ValueError(f"steps {steps} < 1")
        return cls(torch.tensor(loss, dtype=torch.float64, device=dev), steps)


class FinetuningTask(TrainTask):
    """One seed of one finetuning task as a task of the runtime (bertforge.train.trainer.Trainer). Its hooks add
    the dev evaluations with best-state checkpoints, early stopping, the final scoring of the best state and its
    export. Attributes, in the order the hooks fill them:"""

    task: object                    # engine/finetuning/tasks.py (or mlm.py): features, collate, loss, outputs, metrics
    trainer: Trainer
    sampler: MicroBatchSampler      # this rank's micro batches of the training features
    best_ckpt: CheckpointManager    # the best dev state (trainer.ckpt: the resume checkpoints)
    steps_per_epoch: int
    eval_every: int
    best: float                     # best dev score so far, its step, evaluations since, dev history
    best_step: int
    bad_evals: int
    history: list
    stopped: bool                   # early stop

    evaluate_before_stop = True     # a SIGTERM step still evaluates: its score picks the checkpoint set
    log_grad_norm = False

    def __init__(self, task, model_cfg: ModelConfig, init_dir: Path | None, args: FinetuneConfig,
                 par: ParallelConfig, seed: int, out_dir: Path | None = None, echo: Callable[[str], None] = ECHO):
        """`out_dir`: where the best state is exported as seed-N/ (None: not exported)."""
        self.task, self.model_cfg, self.init_dir, self.args, self.par = task, model_cfg, init_dir, args, par
        self.seed, self.out_dir, self.echo = seed, out_dir, echo
        self.best, self.best_step, self.bad_evals, self.history, self.stopped = -math.inf, 0, 0, [], False

    # ---- setup ---------------------------------------------------------------------------------------------------
    def setup(self, trainer: Trainer) -> None:
        self.trainer, args = trainer, self.args
        n = len(self.task.train)
        self.steps_per_epoch = max(1, math.ceil(n / args.global_batch))
        self.eval_every = max(1, self.steps_per_epoch // args.evals_per_epoch)
        self.sampler = MicroBatchSampler(n, trainer.spec.micro_batch, trainer.rank, trainer.world, seed=self.seed)
        self.best_ckpt = CheckpointManager(trainer.spec.state_dir / "best", keep_last=1)

    def resume_point(self) -> ResumePoint | None:
        """The newest checkpoint of the two sets (None: start afresh). Best-state checkpoints newer than the resume
        point cannot exist (each is also the newest resume point when written)."""
        points = [(m.meta(t)["step"], i, m, t) for i, m in enumerate((self.trainer.ckpt, self.best_ckpt))
                  for t in [m.latest()] if t is not None]
        if not points:
            return None
        _, _, manager, tag = max(points, key=lambda p: (p[0], p[1]))
        return ResumePoint(manager, tag)

    def build_model(self, resuming: bool) -> nn.Module:
        model = self.task.build_model(self.model_cfg)
        if self.init_dir is not None and not self.args.from_scratch and not resuming:
            load_pretrained(self.init_dir, model)
            reinit_top_layers(model.bert, self.args.reinit_layers)
        return model

    def param_groups(self, model: nn.Module) -> list[dict]:
        a = self.args
        return layerwise_param_groups(model, a.weight_decay, a.lr, a.layer_lr_decay, head_lr_scale=a.head_lr_scale)

    def restore(self, state: dict, point: ResumePoint) -> None:
        for key in ("best", "best_step", "bad_evals", "history", "stopped"):
            setattr(self, key, state[key])
        self._resumed_from = point.manager.root / point.tag

    def on_start(self) -> None:
        self._t0 = time.perf_counter()

    # ---- one optimizer step --------------------------------------------------------------------------------------
    def micro_batches(self, step: int) -> list[dict]:
        t = self.trainer
        batches = []
        for micro_step in range(t.accum):
            mb = self.sampler.indices(step * t.accum + micro_step)
            feats = [self.task.train[i] for i in mb.indices.tolist()]
            epochs = mb.epochs if mb.epochs is not None else np.zeros_like(mb.indices)
            keys = epochs.astype(np.int64) * len(self.task.train) + mb.indices  # unique per (epoch, example)
            batch = self.task.collate(feats, unpadded=self.args.unpadded, seed=(self.seed, mb.global_index, keys))
            # each example's dropout identity (seed, its epoch, its index): the encoder's masks follow the example,
            # not the rank, micro batch or layout it lands in (as in pretraining)
            batch["dropout_ids"] = torch.from_numpy(sample_dropout_ids(self.seed, mb.epochs, mb.indices))
            batches.append(to_device(batch, t.dev))
        return batches

    def count_items(self, batches: list[dict]) -> int | float | None:
        """The normaliser of a loss taken over the whole step (bertforge.train.token_loss), all micro batches and
        ranks: token-level tasks (task.token_labels) its labelled tokens, classification with class weights its
        summed label weights; None: a per-micro-batch mean (classification without class weights: micro batches
        are of equal size, so that is already the step's mean)."""
        key = getattr(self.task, "token_labels", None)
        if key:
            return step_num_items([b[key] for b in batches], self.trainer.dev)
        weights = getattr(self.task, "class_weights", None)
        if weights is not None:
            return step_num_items([b["labels"] for b in batches], self.trainer.dev, weights=weights)
        return None

    def forward(self, engine, batch: dict, num_items: int | float | None, scale: int) -> tuple[torch.Tensor, None]:
        loss = self.task.loss(engine, batch, num_items) if num_items is not None else self.task.loss(engine, batch)
        return loss * scale, None

    def new_window(self) -> LossWindow:
        return LossWindow(torch.zeros((), dtype=torch.float64, device=self.trainer.dev))

    def add_micro(self, stats: LossWindow, inputs: dict, out, loss: torch.Tensor) -> None:
        stats.loss += loss.detach().double()
        stats.steps = 1

    def window_state(self, window: LossWindow) -> dict | None:
        t = self.trainer
        return window.state(t.dev, t.accum * t.world)

    def restore_window(self, state: dict) -> LossWindow:
        t = self.trainer
        try:
            return LossWindow.from_state(state, t.dev, t.accum * t.world, holder=t.rank == 0)
        except (ValueError, KeyError, TypeError, ZeroDivisionError) as exc:
            raise CheckpointError(f"{self._resumed_from}/meta.json: \"log_window\" does not read "
                                  f"({type(exc).__name__}: {exc}); remove that field to resume with a fresh log "
                                  f"window") from None

    # ---- reporting, evaluation -----------------------------------------------------------------------------------
    def _epoch(self) -> float:
        return round(self.trainer.step / self.steps_per_epoch, 3)

    def log_record(self, window: LossWindow, lr: float, norm: float | None) -> dict | None:
        """The mean training loss of the window (a collective); None for an empty window."""
        t = self.trainer
        total = D.all_reduce_sum([float(window.loss)], t.dev)[0]  # window.steps: the same on every rank
        if not window.steps:
            return None
        loss = total / (window.steps * t.accum * t.world)
        return {"step": t.step, "epoch": self._epoch(), "split": "train", "loss": loss, "lr": lr,
                "skipped_steps": t.guard.skipped}

    def evaluates(self, step: int, last: bool) -> bool:
        return bool(self.task.dev) and (step % self.eval_every == 0 or last)

    def evaluate(self, split: str) -> dict:
        engine = self.trainer.engine
        metrics = evaluate_split(engine, self.task, split, self.args.eval_micro_batch, self.trainer.dev,
                                 self.args.unpadded)
        engine.train()
        return metrics

    def on_evaluate(self) -> bool:
        """Score dev; an improvement checkpoints into the best-state set, anything else into the resume set (and
        counts towards --early-stopping). Returns True: it checkpointed."""
        t = self.trainer
        metrics = self.evaluate("dev")
        score = metrics[self.task.metric]
        self.history.append({"step": t.step, "epoch": self._epoch(), self.task.metric: score})
        t.write({"step": t.step, "epoch": self._epoch(), "split": "dev", **_headline(metrics)})
        t.progress.write(f"seed {self.seed} step {t.step}/{t.spec.total_steps} epoch {self._epoch():.2f}: "
                         f"dev {self.task.metric} {score:.4f}")
        if score > self.best:
            self.best, self.best_step, self.bad_evals = score, t.step, 0
            t.save(self.best_ckpt)
            return True
        self.bad_evals += 1
        if self.args.early_stopping and self.bad_evals >= self.args.early_stopping:
            self.stopped = True
            self.echo(f"seed {self.seed}: early stop at step {t.step} (no dev improvement in {self.bad_evals} "
                      f"evaluations)")
        t.save(t.ckpt)
        return True

    # ---- checkpoints, the end ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals,
                "history": self.history, "stopped": self.stopped}

    def checkpoint_meta(self, finished: bool) -> dict:
        return {"finetune_config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.args).items()},
                "parallel": asdict(self.par), "model_config": asdict(self.model_cfg), "seed": self.seed,
                "task": self.task.info()}

    def on_finish(self, status: str) -> tuple[dict, nn.Module | None]:
        """Preempted: ({'seed', 'status', 'steps'}, None). Finished: the best state scored on dev and test, exported
        to out_dir/seed-N/ (rank 0; its checkpoints removed); returns (result, that model on the CPU; None on other
        ranks)."""
        t = self.trainer
        train_seconds = time.perf_counter() - self._t0
        if status == "preempted":
            return {"seed": self.seed, "status": status, "steps": t.step}, None
        if not self.task.dev:  # no dev set: the final state is the one kept
            self.best_step = t.step
            t.save(self.best_ckpt)
        result, model = self.finish()
        result.update(status="finished", train_seconds=round(train_seconds, 2))
        if self.out_dir is not None and t.rank == 0:
            save_model(model, self.out_dir / f"seed-{self.seed}", self.init_dir, self.task, result, self.args)
            shutil.rmtree(t.spec.state_dir, ignore_errors=True)
        D.barrier()
        return result, model

    def finish(self) -> tuple[dict, nn.Module | None]:
        """Load the best state, score dev and test (sharded), and on rank 0 build a CPU model from its fp32 weights.
        Returns (result, that model; None on other ranks)."""
        t = self.trainer
        tag = self.best_ckpt.latest()
        self.best_ckpt.load(t.engine, tag, module_only=True)
        result = {"seed": self.seed, "best_step": self.best_step, "steps": t.step,
                  "skipped_steps": t.guard.skipped, "dev_history": self.history}
        for split in ("dev", "test"):
            if getattr(self.task, split):
                metrics = self.evaluate(split)
                result[split] = metrics
                t.write({"step": self.best_step, "split": split, "final": True, **_headline(metrics)})
        model = None
        if t.rank == 0:
            model = self.task.build_model(self.model_cfg.replace(kernels="none"))
            state = ds.consolidated_fp32_state_dict(self.best_ckpt.root / tag)
            missing = [k for k in model.load_state_dict(state, strict=False).missing_keys if k not in TIED_OPTIONAL]
            if missing:
                raise CheckpointError(f"{self.best_ckpt.root / tag}: the consolidated weights lack {missing[:3]}")
            model.eval()
        D.barrier()
        return result, model


def _headline(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def seed_trainer(task, config: ModelConfig, init_dir: Path | None, args: FinetuneConfig, seed: int,
                 state: Path, par: ParallelConfig, out_dir: Path | None = None, log: MetricsWriter | None = None,
                 echo: Callable[[str], None] = ECHO, user_ds: dict | None = None) -> Trainer:
    """The runtime's Trainer for one seed (not yet set up): checkpoints under `state`, `args` with the recipe
    fields left unset at the lecture's values. ConfigError without training examples."""
    args = args.filled()
    n = len(task.train)
    if n == 0:
        raise ConfigError("no training examples")
    D.prepare_env()
    total = args.total_steps(n)
    spec = RunSpec(parallel=par, seed=seed, global_batch=args.global_batch,
                   micro_batch=args.micro_batch_for(D.world_size()), total_steps=total,
                   warmup_steps=int(args.warmup_ratio * total), lr=args.lr, max_grad_norm=args.max_grad_norm,
                   state_dir=state, eps=args.adam_eps, decay="linear", keep_last=1, log_every=args.log_every,
                   save_every=args.save_every, progress=args.progress, progress_desc=f"{task.name} seed {seed}",
                   progress_leave=False, who=f"seed {seed}", record_fields={"seed": seed}, user_ds=user_ds)
    return Trainer(FinetuningTask(task, config, init_dir, args, par, seed, out_dir, echo), spec, metrics=log,
                   echo=echo)


def train_seed(task, config: ModelConfig, init_dir: Path | None, args: FinetuneConfig, seed: int,
               out_dir: Path | None, log: MetricsWriter | None, echo: Callable[[str], None] = ECHO,
               par: ParallelConfig | None = None, user_ds: dict | None = None) -> tuple[dict, nn.Module | None]:
    """Finetune once with `seed`: `task.build_model(config)`, loaded from `init_dir` unless args.from_scratch, on
    the runtime (bertforge.train.trainer). Writes JSONL lines to `log` (None: nothing) and, with `out_dir`, the best
    state to out_dir/seed-N/ (its checkpoints under out_dir/state/seed-N/ while it runs; without `out_dir` a
    temporary folder, one process only). `user_ds`: a user's DeepSpeed JSON (its keys not folded into `args`).
    Returns ({'seed', 'best_step', 'steps', 'train_seconds', 'dev_history', 'dev', 'test', 'status'}, the model in
    its best dev state on the CPU (None on ranks other than 0, and after a SIGTERM))."""
    par = par or ParallelConfig()
    D.prepare_env()
    if out_dir is None and D.world_size() > 1:
        raise ConfigError("several ranks need an output directory (--out) for the checkpoints they share")
    with contextlib.ExitStack() as stack:
        state = (state_dir(out_dir, seed) if out_dir is not None
                 else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bertforge-finetune-"))))
        return seed_trainer(task, config, init_dir, args, seed, state, par, out_dir, log, echo, user_ds).run()


def save_model(model: nn.Module, directory: Path, tokenizer_dir: Path | None, task, result: dict,
               args: FinetuneConfig) -> Path:
    """`directory` (atomically): Hugging Face files (+ the tokenizer of `tokenizer_dir`) and TASK_FILE with the
    task's settings, the recipe and the seed's result."""
    id2label = dict(enumerate(task.labels)) if task.labels else None
    info = {**task.info(), "args": asdict(args), "result": result}
    return export_hf(model, directory, tokenizer_dir, id2label=id2label, max_length=args.max_seq_length,
                     card=finetune_card(info), extra_files={TASK_FILE: json.dumps(info, indent=2, sort_keys=True) + "\n"})
