"""The low-learning-rate finetuning loop (BERT's recipe) on the DeepSpeed engine that pretraining uses: AdamW (weight
decay 0.01, none on biases / LayerNorm), lr 2e-5 with 10% linear warmup then linear decay to 0, 3 epochs, dropout
0.1, encoder and head both trained, gradient clipping at 1.0 (bertforge.config.finetune holds these defaults). The
model is wrapped by engine/parallelize.py only: device placement, bf16 / fp16 (dynamic loss scaling), ZeRO 0-3,
gradient accumulation, clipping, compile, activation checkpointing; kernels come with the model config.

One optimizer step = `accum` micro batches per rank; global micro batch k of the even distributed order
(engine/data/sampler.py) runs on rank k % world, so no rank runs out of batches first (no hang at the end of an
epoch, whatever the data size) and 1 rank x accumulation 2n takes the same steps as 2 ranks x n. Every step has one
collective (after the backward): the ranks agree on a non-finite loss (the step is skipped everywhere) and on a
SIGTERM (checkpoint, exit 143). Dev evaluation (sharded, engine/finetuning/evaluation.py) after every epoch or
`evals_per_epoch` times; every evaluation checkpoints: an improvement into the best-state checkpoints, otherwise into
the resume checkpoints, so the best dev state is never lost and a resume continues from the newest of the two with
the identical loss sequence. At the end the best state is loaded, dev and test are scored, and rank 0 exports its
fp32 weights (the masters under bf16 / fp16) as a Hugging Face directory.

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
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from bertforge import deepspeed as ds
from bertforge import distributed as D
from bertforge.config import ModelConfig
from bertforge.config.finetune import FinetuneConfig, ParallelConfig
from bertforge.data.sampler import MicroBatchSampler
from bertforge.errors import CheckpointError, ConfigError
from bertforge.finetuning.evaluation import evaluate_split, to_device
from bertforge.finetuning.tasks import TASK_FILE
from bertforge.hf import TIED_OPTIONAL, export_hf, load_pretrained
from bertforge.log import result_echo
from bertforge.model import reinit_top_layers
from bertforge.model_card import finetune_card
from bertforge.optim import build_optimizer, layerwise_param_groups, warmup_decay
from bertforge.parallelize import ParallelPlan, parallelize
from bertforge.progress import NullProgress, Progress, progress
from bertforge.train.setup import join_runtime
from bertforge.train.step import StepGuard
from bertforge.train.checkpoint import CheckpointManager
from bertforge.train.metrics import MetricsWriter
from bertforge.train.rng import rng_state, seed_everything, set_rng_state
from bertforge.train.token_loss import backward_scale, step_num_items

def state_dir(out_dir: Path, seed: int) -> Path:
    """Where a seed's checkpoints live while it runs."""
    return out_dir / "state" / f"seed-{seed}"


def build_ds_config(args: FinetuneConfig, par: ParallelConfig, world: int, user: dict | None = None) -> dict:
    """DeepSpeed's JSON for these settings on `world` ranks."""
    micro = args.micro_batch_for(world)
    return ds.build_ds_config(micro_batch=micro, global_batch=args.global_batch,
                              grad_accum=args.global_batch // (micro * world), max_grad_norm=args.max_grad_norm,
                              zero_stage=par.zero_stage, precision=par.precision, user=user)


class FinetuneTrainer:
    """One seed of one task. Attributes, in the order `setup` fills them:"""

    task: object                    # engine/finetuning/tasks.py (or mlm.py): features, collate, loss, outputs, metrics
    model_cfg: ModelConfig
    args: FinetuneConfig
    par: ParallelConfig
    seed: int
    dev: torch.device
    rank: int
    world: int
    accum: int                      # micro batches per rank per optimizer step
    micro: int
    sampler: MicroBatchSampler      # this rank's micro batches of the training features
    engine: object                  # DeepSpeed engine (engine/parallelize.py)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ckpt: CheckpointManager         # resume checkpoints
    best_ckpt: CheckpointManager    # the best dev state
    total_steps: int
    steps_per_epoch: int
    eval_every: int
    step: int                       # optimizer steps done
    best: float                     # best dev score so far, its step, evaluations since, dev history
    best_step: int
    bad_evals: int
    history: list
    guard: StepGuard                # skip gate, stop agreement, non-finite steps skipped in total and in a row

    def __init__(self, task, model_cfg: ModelConfig, init_dir: Path | None, args: FinetuneConfig,
                 par: ParallelConfig, seed: int, ds_config: dict, state: Path, log: MetricsWriter | None = None,
                 echo: Callable[[str], None] = result_echo(__name__)):
        self.task, self.model_cfg, self.init_dir, self.args, self.par = task, model_cfg, init_dir, args, par
        self.seed, self.ds_config, self.state, self.log, self.echo = seed, ds_config, state, log, echo

    # ---- setup ---------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        args = self.args = self.args.filled()  # recipe fields left unset: the lecture's values
        self.dev, self.rank, self.world = D.device(), D.rank(), D.world_size()
        self.micro = self.ds_config["train_micro_batch_size_per_gpu"]
        self.accum = self.ds_config["gradient_accumulation_steps"]
        n = len(self.task.train)
        if n == 0:
            raise ConfigError("no training examples")
        self.steps_per_epoch = max(1, math.ceil(n / args.global_batch))
        self.total_steps = args.total_steps(n)
        self.eval_every = max(1, self.steps_per_epoch // args.evals_per_epoch)
        self.sampler = MicroBatchSampler(n, self.micro, self.rank, self.world, seed=self.seed)

        self.ckpt = CheckpointManager(self.state, keep_last=1)
        self.best_ckpt = CheckpointManager(self.state / "best", keep_last=1)
        resume_from = self._resume_point()
        seed_everything(self.seed)  # the same initial weights on every rank
        model = self.task.build_model(self.model_cfg)
        if self.init_dir is not None and not args.from_scratch and resume_from is None:
            load_pretrained(self.init_dir, model)
            reinit_top_layers(model.bert, args.reinit_layers)
        model.to(self.dev)
        groups = layerwise_param_groups(model, args.weight_decay, args.lr, args.layer_lr_decay,
                                        head_lr_scale=args.head_lr_scale)
        self.optimizer = build_optimizer("adamw", groups, args.lr, eps=args.adam_eps)
        plan = ParallelPlan(self.ds_config, compile=self.par.compile,
                            activation_checkpointing=self.par.activation_checkpointing)
        self.engine, gate = parallelize(model, self.optimizer, plan, log=D.log0)
        self.guard = StepGuard(gate, self.par.max_skipped_steps, self.par.precision == "fp16")
        # after the skip gate is installed on the optimizer (the schedule wraps its step)
        self.scheduler = warmup_decay(self.optimizer, int(args.warmup_ratio * self.total_steps), self.total_steps,
                                      "linear")
        seed_everything(self.seed + 1000 * self.rank)  # dropout streams differ per rank

        self.step = self.best_step = self.bad_evals = 0
        self.best, self.history, self.stopped = -math.inf, [], False
        if resume_from is not None:
            manager, tag = resume_from
            state = manager.load(self.engine, tag)
            self.scheduler.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"])
            for key in ("step", "best", "best_step", "bad_evals", "history", "stopped"):
                setattr(self, key, state[key])
            self.guard.skipped, self.guard.in_a_row = state["skipped"], state["in_a_row"]
            self.echo(f"seed {self.seed}: resumed from {manager.root / tag} at step {self.step}")

    def _resume_point(self) -> tuple[CheckpointManager, str] | None:
        """The newest checkpoint of the two sets (None: start afresh). Best-state checkpoints newer than the resume
        point cannot exist (each is also the newest resume point when written)."""
        points = [(m.meta(t)["step"], i, m, t) for i, m in enumerate((self.ckpt, self.best_ckpt))
                  for t in [m.latest()] if t is not None]
        if not points:
            return None
        _, _, manager, tag = max(points, key=lambda p: (p[0], p[1]))
        return manager, tag

    # ---- one optimizer step --------------------------------------------------------------------------------------
    def train_step(self, preempt: D.Preemption) -> tuple[torch.Tensor, bool, bool]:
        """`accum` micro batches and one update (or a skip on every rank). Returns (the summed micro-batch losses on
        the device, whether the update was applied, whether the ranks agreed to stop on a SIGTERM)."""
        engine = self.engine
        self.guard.open()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.dev)
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.dev)
        stop = False
        batches = []
        for micro_step in range(self.accum):
            mb = self.sampler.indices(self.step * self.accum + micro_step)
            feats = [self.task.train[i] for i in mb.indices.tolist()]
            batches.append(to_device(self.task.collate(feats, unpadded=self.args.unpadded,
                                                       seed=(self.seed, mb.global_index)), self.dev))
        # token-level losses: one mean over the step's labelled tokens, all micro batches and ranks (token_loss.py)
        key = getattr(self.task, "token_labels", None)
        n = step_num_items([b[key] for b in batches], self.dev) if key else None
        scale = backward_scale(self.accum, self.world) if key else 1
        for micro_step, batch in enumerate(batches):
            loss = (self.task.loss(engine, batch, n) if key else self.task.loss(engine, batch)) * scale
            nonfinite |= ~torch.isfinite(loss.detach())
            engine.backward(loss)
            if micro_step == self.accum - 1:
                # the step's one collective: all ranks skip a non-finite step together, and stop together
                stop = self.guard.agree(nonfinite, preempt.flag, self.dev)
            engine.step()
            loss_sum += loss.detach().double()
        return loss_sum, self.guard.applied(engine), stop

    # ---- evaluation, checkpoints ---------------------------------------------------------------------------------
    def evaluate(self, split: str) -> dict:
        metrics = evaluate_split(self.engine, self.task, split, self.args.eval_micro_batch, self.dev,
                                 self.args.unpadded)
        self.engine.train()
        return metrics

    def save(self, manager: CheckpointManager) -> None:
        """A checkpoint of everything the continuation needs (a collective)."""
        trainer_state = {"step": self.step, "scheduler": self.scheduler.state_dict(), "rng": rng_state(),
                         "skipped": self.guard.skipped, "in_a_row": self.guard.in_a_row, "best": self.best,
                         "best_step": self.best_step, "bad_evals": self.bad_evals, "history": self.history,
                         "stopped": self.stopped}
        meta = {"finetune_config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.args).items()},
                "parallel": asdict(self.par), "model_config": asdict(self.model_cfg), "seed": self.seed,
                "task": self.task.info()}
        manager.save(self.engine, self.step, trainer_state, meta)

    def _record(self, record: dict) -> None:
        if self.log is not None:
            self.log.write({"seed": self.seed, **record})

    def _epoch(self) -> float:
        return round(self.step / self.steps_per_epoch, 3)

    # ---- the loop ------------------------------------------------------------------------------------------------
    def train(self) -> str:
        """Train to the end, an early stop or a SIGTERM. Returns 'finished' or 'preempted' (a checkpoint was saved)."""
        args, task = self.args, self.task
        bar = progress(self.total_steps, f"{task.name} seed {self.seed}", unit="step", initial=self.step,
                       leave=False, enabled=self.rank == 0, bar=args.progress)
        window = torch.zeros((), dtype=torch.float64, device=self.dev)
        window_steps = 0
        self.engine.train()
        with contextlib.ExitStack() as stack:
            stack.callback(bar.close)
            preempt = stack.enter_context(D.Preemption())
            while self.step < self.total_steps and not self.stopped:
                lr = self.optimizer.param_groups[0]["lr"]
                loss_sum, applied, stop = self.train_step(preempt)
                self.step += 1
                bar.update(1)
                if applied:
                    self.scheduler.step()
                    window += loss_sum
                    window_steps += 1
                self.guard.count(applied, self.step, who=f"seed {self.seed} ")
                last = self.step == self.total_steps
                if self.step % args.log_every == 0 or last:
                    total = D.all_reduce_sum([float(window)], self.dev)[0]  # window_steps: the same on every rank
                    if window_steps:
                        loss = total / (window_steps * self.accum * self.world)
                        self._record({"step": self.step, "epoch": self._epoch(), "split": "train", "loss": loss,
                                      "lr": lr, "skipped_steps": self.guard.skipped})
                        bar.update(0, loss=loss)
                    window.zero_()
                    window_steps = 0
                saved = False
                if task.dev and (self.step % self.eval_every == 0 or last):
                    self._dev_evaluation(bar)
                    saved = True
                elif args.save_every and self.step % args.save_every == 0 and not last:
                    self.save(self.ckpt)
                    saved = True
                if stop:
                    if not saved:
                        self.save(self.ckpt)
                    self.echo(f"seed {self.seed}: SIGTERM: checkpoint saved at step {self.step} in {self.state}; "
                              f"continue with --resume")
                    return "preempted"
        if not task.dev:  # no dev set: the final state is the one kept
            self.best_step = self.step
            self.save(self.best_ckpt)
        return "finished"

    def _dev_evaluation(self, bar: Progress | NullProgress) -> None:
        metrics = self.evaluate("dev")
        score = metrics[self.task.metric]
        self.history.append({"step": self.step, "epoch": self._epoch(), self.task.metric: score})
        self._record({"step": self.step, "epoch": self._epoch(), "split": "dev", **_headline(metrics)})
        bar.write(f"seed {self.seed} step {self.step}/{self.total_steps} epoch {self._epoch():.2f}: "
                       f"dev {self.task.metric} {score:.4f}")
        if score > self.best:
            self.best, self.best_step, self.bad_evals = score, self.step, 0
            self.save(self.best_ckpt)
            return
        self.bad_evals += 1
        if self.args.early_stopping and self.bad_evals >= self.args.early_stopping:
            self.stopped = True
            self.echo(f"seed {self.seed}: early stop at step {self.step} (no dev improvement in {self.bad_evals} "
                      f"evaluations)")
        self.save(self.ckpt)

    def finish(self) -> tuple[dict, nn.Module | None]:
        """Load the best state, score dev and test (sharded), and on rank 0 build a CPU model from its fp32 weights.
        Returns (result, that model; None on other ranks)."""
        tag = self.best_ckpt.latest()
        self.best_ckpt.load(self.engine, tag, module_only=True)
        result = {"seed": self.seed, "best_step": self.best_step, "steps": self.step,
                  "skipped_steps": self.guard.skipped, "dev_history": self.history}
        for split in ("dev", "test"):
            if getattr(self.task, split):
                metrics = self.evaluate(split)
                result[split] = metrics
                self._record({"step": self.best_step, "split": split, "final": True, **_headline(metrics)})
        model = None
        if self.rank == 0:
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


def train_seed(task, config: ModelConfig, init_dir: Path | None, args: FinetuneConfig, seed: int,
               out_dir: Path | None, log: MetricsWriter | None, echo: Callable[[str], None] = result_echo(__name__),
               par: ParallelConfig | None = None, ds_config: dict | None = None) -> tuple[dict, nn.Module | None]:
    """Finetune once with `seed`: `task.build_model(config)`, loaded from `init_dir` unless args.from_scratch, on
    the DeepSpeed engine. Writes JSONL lines to `log` (None: nothing) and, with `out_dir`, the best state to
    out_dir/seed-N/ (its checkpoints under out_dir/state/seed-N/ while it runs; without `out_dir` a temporary
    folder, one process only). Returns ({'seed', 'best_step', 'steps', 'train_seconds', 'dev_history', 'dev',
    'test', 'status'}, the model in its best dev state on the CPU (None on ranks other than 0, and after a
    SIGTERM))."""
    par = par or ParallelConfig()
    join_runtime(par)
    if ds_config is None:
        ds_config = build_ds_config(args, par, D.world_size())
    if out_dir is None and D.world_size() > 1:
        raise ConfigError("several ranks need an output directory (--out) for the checkpoints they share")
    with contextlib.ExitStack() as stack:
        state = (state_dir(out_dir, seed) if out_dir is not None
                 else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bertforge-finetune-"))))
        trainer = FinetuneTrainer(task, config, init_dir, args, par, seed, ds_config, state, log, echo)
        trainer.setup()
        t0 = time.perf_counter()
        status = trainer.train()
        train_seconds = time.perf_counter() - t0
        if status == "preempted":
            return {"seed": seed, "status": status, "steps": trainer.step}, None
        result, model = trainer.finish()
        result.update(status=status, train_seconds=round(train_seconds, 2))
        del trainer
        if out_dir is not None and D.rank() == 0:
            save_model(model, out_dir / f"seed-{seed}", init_dir, task, result, args)
            shutil.rmtree(state, ignore_errors=True)
        D.barrier()
    return result, model


def save_model(model: nn.Module, directory: Path, tokenizer_dir: Path | None, task, result: dict,
               args: FinetuneConfig) -> Path:
    """`directory` (atomically): Hugging Face files (+ the tokenizer of `tokenizer_dir`) and TASK_FILE with the
    task's settings, the recipe and the seed's result."""
    id2label = dict(enumerate(task.labels)) if task.labels else None
    info = {**task.info(), "args": asdict(args), "result": result}
    return export_hf(model, directory, tokenizer_dir, id2label=id2label, max_length=args.max_seq_length,
                     card=finetune_card(info), extra_files={TASK_FILE: json.dumps(info, indent=2, sort_keys=True) + "\n"})
