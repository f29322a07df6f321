"""The one training runtime: `Trainer` drives a `TrainTask` (pretraining: bertforge.training.trainer; finetuning:
bertforge.finetuning.trainer) through set-up, optimizer steps, evaluation, checkpoints, resume and the end of a run.

The runtime owns, once each: the device check, the launcher environment and the process group
(`bertforge.train.setup`), DeepSpeed's JSON (built from the typed `RunSpec`, never read back), the
optimizer and learning-rate schedule, `parallelize` (its log on rank 0), the skip gate, the stop agreement and the
in-a-row limit (`StepGuard`, `ParallelConfig.max_skipped_steps`), SIGTERM (`bertforge.distributed.Preemption`: a
checkpoint after the agreed step, then status 'preempted'), the log window (a checkpoint taken inside one carries
its reduced sums, `TrainTask.window_state`, so a resume's first metrics line is the uninterrupted run's), progress,
the metrics writer (metrics.jsonl + TensorBoard) and checkpoints (save, the resume point, the resume rule,
DeepSpeed's universal form for ZeRO 1-3 on another number of ranks). A task owns its data, model, loss, statistics,
evaluation and what happens at the end (pretraining: the final evaluation and export; finetuning: best-state
checkpoints, early stopping and the export of the best state).

One optimizer step = `accum` micro batches per rank, then engine.step() at the boundary; its one host sync is the
StepGuard's all-reduce after the last backward is queued (non-finite loss on any rank -> the update is skipped
everywhere; SIGTERM on any rank -> every rank checkpoints after this step). Token-level losses are one mean over the
step's labelled tokens on all micro batches and ranks (`TrainTask.count_items`, bertforge.train.token_loss)."""
from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn

from bertforge import deepspeed as ds
from bertforge import distributed as D
from bertforge.config.parallel import ParallelConfig
from bertforge.errors import ConfigError
from bertforge.malloc import pin_mmap_threshold
from bertforge.optim import build_optimizer, warmup_decay
from bertforge.parallelize import ParallelPlan, parallelize
from bertforge.progress import progress
from bertforge.train.checkpoint import CheckpointManager
from bertforge.train.metrics import MetricsWriter
from bertforge.train.resume import ResumePlan, continue_schedule, plan_resume
from bertforge.train.rng import rng_state, seed_everything, set_rng_state
from bertforge.train.setup import join_group, prepare_runtime
from bertforge.train.step import StepGuard
from bertforge.train.token_loss import backward_scale


@dataclass(frozen=True)
class RunSpec:
    """The runtime's facts of one run, typed. DeepSpeed's JSON is built from them (with a user's JSON already merged
    into the task's config, `user_ds` its remaining keys) and nothing is read back from it."""

    parallel: ParallelConfig
    seed: int                       # initial weights; dropout streams use seed + 1000 x rank
    global_batch: int               # samples per optimizer step, all ranks
    micro_batch: int                # samples per forward, per rank
    total_steps: int
    warmup_steps: int
    lr: float                       # peak (the groups' own lr when they set one)
    max_grad_norm: float            # 0: no clipping
    state_dir: Path                 # checkpoints in state_dir/checkpoints
    optimizer: str = "adamw"        # 'adamw' | 'lamb' (bertforge.optim.build_optimizer)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6
    decay: str = "linear"           # after warmup: 'linear' | 'poly' | 'cosine' | 'constant'
    decay_power: float = 1.0
    keep_last: int = 1              # checkpoints kept
    log_every: int = 10             # optimizer steps per metrics line (and the last step)
    save_every: int = 0             # optimizer steps per checkpoint (0: none besides the task's)
    metrics_dir: Path | None = None  # metrics.jsonl + tensorboard/ here (rank 0); None: a writer given to Trainer
    progress: bool = True           # a bar on a terminal (else plain lines every 30 s)
    progress_desc: str = "train"
    progress_leave: bool = True
    who: str = ""                   # names the run in messages ('seed 1'); '' for none
    skip_advice: str = "lower --lr"  # the flags to change when too many steps in a row are skipped
    record_fields: dict = field(default_factory=dict)  # leading fields of every metrics line ({'seed': 1})
    user_ds: dict | None = None
    report_to: tuple[str, ...] = ("jsonl", "tensorboard")  # trackers of the metrics writer (train/trackers.py)
    report_params: dict | None = None  # the run's settings, handed to the trackers (W&B config, MLflow params)

    def grad_accum(self, world: int) -> int:
        """Micro batches per rank per optimizer step; ConfigError when the global batch does not split evenly."""
        per_step = self.micro_batch * world
        if per_step < 1 or self.global_batch % per_step:
            raise ConfigError(f"--global-batch ({self.global_batch}) is not divisible by --micro-batch "
                              f"({self.micro_batch}) x ranks ({world}) = {per_step}")
        return self.global_batch // per_step


@dataclass
class ResumePoint:
    """Where a run continues: checkpoint `tag` of `manager`; `check`: the run's flat config for the resume rule
    (bertforge.train.resume), None when the task checks its own; `planned_steps`: the run's planned length (before
    any --extend-steps), which the rule compares an extension with."""
    manager: CheckpointManager
    tag: str
    check: dict | None = None
    planned_steps: int = 0


class Window(Protocol):
    """Statistics of applied steps since the last metrics line (a task's; kept on the device until then)."""

    def add(self, other: "Window") -> None: ...


class TrainTask(abc.ABC):
    """What the runtime calls. Set-up, in order: setup(trainer) (before the process group), after_join(),
    resume_point(), build_model(resuming), param_groups(model), restore(state, point) when
    resuming, on_start(). Each step: before_step(), micro_batches(step), count_items(batches), per micro batch
    forward(...) and add_micro(...), after_step(); on decision steps sync_counters(), log_record(...) on logging
    steps, on_evaluate() where evaluates(step, last). At the end on_finish(status), then close(). The trainer's
    attributes (engine, step, guard, progress, ckpt, write, save) are the task's to use. Hooks with a body here are
    optional."""

    stopped: bool = False             # the task ended training early (early stopping)
    evaluate_before_stop: bool = False  # a SIGTERM step still evaluates (its score picks the checkpoint set)
    log_grad_norm: bool = False       # take the gradient norm on logging steps (ZeRO-0 fp32)

    @abc.abstractmethod
    def setup(self, trainer: "Trainer") -> None:
        """Check the task's input and build what needs no process group (trainer.rank, world, accum, ckpt are
        set; trainer.dev is not yet)."""

    def after_join(self) -> None:
        """The process group is up and trainer.dev set: start loaders, build device-side pieces."""

    def resume_point(self) -> ResumePoint | None:
        """The checkpoint to continue from; None: start afresh."""
        return None

    @abc.abstractmethod
    def build_model(self, resuming: bool) -> nn.Module:
        """The model to train (torch's generator seeded with spec.seed); `resuming`: its weights come from a
        checkpoint next (skip loading initial weights)."""

    @abc.abstractmethod
    def param_groups(self, model: nn.Module) -> list[dict]: ...

    def restore(self, state: dict, point: ResumePoint) -> None:
        """The task's part of a checkpoint's trainer state (its `state_dict` keys)."""

    def on_start(self) -> None:
        """After set-up (and resume), before the first step."""

    @abc.abstractmethod
    def micro_batches(self, step: int) -> list[dict]:
        """This rank's trainer.accum micro batches of optimizer step `step` (0-based), on trainer.dev."""

    def count_items(self, batches: list[dict]) -> Any:
        """A token-level loss's denominator: the step's labelled tokens over all micro batches and ranks (an int or
        a device tensor); None: the loss is a per-micro-batch mean (no scaling)."""
        return None

    @abc.abstractmethod
    def forward(self, engine, inputs: dict, num_items: Any, scale: int) -> tuple[torch.Tensor, Any]:
        """(the loss to backward, the forward's output for add_micro). With num_items, the loss is the sum over
        this micro batch's tokens / num_items, times `scale` (bertforge.train.token_loss.backward_scale)."""

    @abc.abstractmethod
    def new_window(self) -> Window: ...

    def window_state(self, window: Window) -> dict | None:
        """The open log window's sums, reduced over the ranks, for a checkpoint's meta.json ("log_window"): a
        collective on a saving step. A resume restores them (`restore_window`), so its first metrics line averages
        the whole window as the uninterrupted run's does. None: nothing carried (the first line after a resume then
        covers only the steps since the checkpoint)."""
        return None

    def restore_window(self, state: dict) -> Window:
        """This rank's first window after a resume from a checkpoint with a `window_state` (called on every rank:
        the sums are global, so one rank holds them and the others start empty). CheckpointError naming meta.json
        for a state that does not read."""
        return self.new_window()

    @abc.abstractmethod
    def add_micro(self, stats: Window, inputs: dict, out: Any, loss: torch.Tensor) -> None:
        """Add one micro batch's statistics to the step's `stats` (after engine.step())."""

    def skip_detail(self, stats: Window) -> str:
        """Follows the count in the in-a-row error (' (last 3.2)'); may read the device."""
        return ""

    def before_step(self) -> None: ...

    def after_step(self) -> None: ...

    def sync_counters(self) -> None:
        """Steps that log, evaluate or save: reduce counters kept since the last such step (a collective)."""

    @abc.abstractmethod
    def log_record(self, window: Window, lr: float, norm: float | None) -> dict | None:
        """The metrics line of `window` (a collective on every rank); None when it is empty."""

    def progress_fields(self, record: dict) -> dict:
        """The progress bar's fields from a metrics line."""
        return {"loss": record["loss"]}

    def evaluates(self, step: int, last: bool) -> bool:
        return False

    def on_evaluate(self) -> bool:
        """Evaluate at this step; returns whether it saved a checkpoint (then the runtime does not)."""
        return False

    @abc.abstractmethod
    def state_dict(self) -> dict:
        """The task's part of the trainer state in a checkpoint (keys besides step, scheduler, rng, skipped,
        in_a_row)."""

    @abc.abstractmethod
    def checkpoint_meta(self, finished: bool) -> dict:
        """The checkpoint's meta.json fields (train_config for the resume rule, model_config, ...)."""

    @abc.abstractmethod
    def on_finish(self, status: str) -> Any:
        """status 'finished', 'preempted' (a checkpoint was saved) or 'noop' (a finished run resumed unchanged: set-up
        stopped after resume_point(), with trainer.step the checkpoint's; no model, engine or on_start()); returns
        the run's result."""

    def close(self) -> None:
        """Release the task's resources (data loaders); called once, also after an error past set-up."""


class Trainer:
    """One run of a task. Attributes, in the order `setup` fills them:"""

    dev: torch.device
    rank: int
    world: int
    accum: int                      # micro batches per rank per optimizer step
    ckpt: CheckpointManager         # spec.state_dir/checkpoints
    noop: str | None                # a finished run resumed unchanged: the line saying so
    plan: ResumePlan                # the resume rule's verdict (extension history for config.json / meta.json)
    ds_config: dict                 # DeepSpeed's JSON (built from spec; not read back)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    engine: object                  # DeepSpeed engine (bertforge.parallelize)
    guard: StepGuard                # skip gate, stop agreement, skipped steps in total and in a row
    step: int                       # optimizer steps done
    metrics: MetricsWriter | None   # metrics.jsonl + TensorBoard (rank 0)

    def __init__(self, task: TrainTask, spec: RunSpec, metrics: MetricsWriter | None = None,
                 echo: Callable[[str], None] = D.log0):
        """`metrics`: a writer shared by several runs (finetuning's seeds); None: one opened in spec.metrics_dir
        (and closed at the end), or none without a metrics_dir. `echo`: rank 0's messages."""
        self.task, self.spec, self.echo = task, spec, echo
        self.metrics, self._own_metrics = metrics, metrics is None and spec.metrics_dir is not None
        self.noop = None
        self.plan = ResumePlan()
        self.window = None  # the open log window (train)
        self._carried = None  # a resumed checkpoint's open log window (meta.json "log_window"), or None

    def _say(self, text: str) -> None:
        self.echo(f"{self.spec.who}: {text}" if self.spec.who else text)

    # ---- setup ---------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        spec, task = self.spec, self.task
        pin_mmap_threshold()
        prepare_runtime(spec.parallel)  # the device check and the launcher environment
        self.rank, self.world = D.rank(), D.world_size()
        self.accum = spec.grad_accum(self.world)
        self.ckpt = CheckpointManager(spec.state_dir, spec.keep_last)
        task.setup(self)  # before the process group: a task's bad input fails before any rendezvous
        self.dev = join_group(spec.parallel)
        task.after_join()
        point = task.resume_point()
        universal = self._check_resume(point)
        if self.noop:  # a finished run resumed unchanged: decided from its meta.json, no model or engine built
            return
        seed_everything(spec.seed)  # the same initial weights on every rank
        model = task.build_model(resuming=point is not None).to(self.dev)
        self.optimizer = build_optimizer(spec.optimizer, task.param_groups(model), spec.lr, spec.betas, spec.eps)
        self.ds_config = ds.build_ds_config(micro_batch=spec.micro_batch, global_batch=spec.global_batch,
                                            grad_accum=self.accum, max_grad_norm=spec.max_grad_norm,
                                            zero_stage=spec.parallel.zero_stage, precision=spec.parallel.precision,
                                            user=spec.user_ds, load_universal=universal is not None)
        plan = ParallelPlan(self.ds_config, compile=spec.parallel.compile,
                            activation_checkpointing=spec.parallel.activation_checkpointing)
        self.engine, gate = parallelize(model, self.optimizer, plan, log=D.log0)
        self.guard = StepGuard(gate, spec.parallel.max_skipped_steps, spec.parallel.precision == "fp16")
        # after the skip gate is installed on the optimizer (the schedule wraps its step)
        self.scheduler = warmup_decay(self.optimizer, spec.warmup_steps, spec.total_steps, spec.decay,
                                      spec.decay_power)
        # torch's generator per rank (dropout streams differ per rank)
        seed_everything(spec.seed + 1000 * self.rank)
        self.step = 0
        if point is not None:
            self._restore(point, universal)
        if self._own_metrics:
            self.metrics = MetricsWriter(spec.metrics_dir, enabled=self.rank == 0,
                                         resume_step=self.step if point is not None else None,
                                         report_to=spec.report_to, params=spec.report_params)
        task.on_start()

    def _check_resume(self, point: ResumePoint | None) -> str | None:
        """The resume rule (a ConfigError for a resume that would change the run; `noop` for a finished run resumed
        unchanged, with self.step the checkpoint's) and, for ZeRO 1-3 written by another number of ranks, DeepSpeed's
        universal form of the checkpoint (its tag; None when not needed)."""
        if point is None:
            return None
        manager, tag = point.manager, point.tag
        if point.check is not None:
            meta = manager.meta(tag)
            self.plan = plan_resume(meta, point.check, manager.root / tag, point.planned_steps)
            self.noop = self.plan.noop
            if self.noop:  # nothing to load
                self.step = int(meta.get("step", 0))
                return None
        if manager.needs_universal(tag, self.spec.parallel.zero_stage):
            return manager.make_universal(tag)
        return None

    def _restore(self, point: ResumePoint, universal: str | None) -> None:
        """Engine, schedule, counters and RNG from the checkpoint, then the task's own state. Written by another
        number of ranks: torch's generator is reseeded per rank and step (the saved states belong to the old
        ranks; dropout does not use it: its masks are keyed per sample)."""
        state = point.manager.load(self.engine, point.tag, universal=universal)
        self._carried = point.manager.meta(point.tag).get("log_window")  # absent in older checkpoints
        self.scheduler.load_state_dict(state["scheduler"])
        # the next step's rate from the (possibly recomputed: --extend-steps) schedule, never the restored 0
        continue_schedule(self.scheduler, self.plan, self._say, self.spec.warmup_steps, self.spec.decay)
        self.step, self.guard.skipped, self.guard.in_a_row = state["step"], state["skipped"], state["in_a_row"]
        self.task.restore(state, point)
        saved_world = state["saved_world_size"]
        if saved_world == self.world:
            set_rng_state(state["rng"])
        else:
            seed_everything(self.spec.seed + 1000 * self.rank + 1_000_003 * self.step)
        self._say(f"resumed from {point.manager.root / point.tag} at step {self.step}")

    # ---- one optimizer step --------------------------------------------------------------------------------------
    def train_step(self, logging: bool, stop_requested: Callable[[], bool] = lambda: False
                   ) -> tuple[Window, bool, float | None, bool]:
        """`accum` micro batches, one update (or a skip on every rank). Returns (this step's statistics, whether the
        update was applied, the gradient norm when `logging` and the task wants it and it is known before the step,
        whether any rank asked to stop: `stop_requested()` is read at the last micro batch and agreed on in the
        step's all-reduce)."""
        task, engine = self.task, self.engine
        self.guard.open()
        stats = task.new_window()
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.dev)
        norm, stop = None, False
        batches = task.micro_batches(self.step)
        items = task.count_items(batches)  # token-level losses: one mean over the step (token_loss.py)
        scale = backward_scale(self.accum, self.world) if items is not None else 1
        for micro_step, inputs in enumerate(batches):
            loss, out = task.forward(engine, inputs, items, scale)
            nonfinite |= ~torch.isfinite(loss.detach())
            engine.backward(loss)  # NaN grads are harmless: the update is vetoed below
            if micro_step == self.accum - 1:
                if logging and task.log_grad_norm:
                    norm = ds.grad_norm_before_step(engine)
                # the one host sync of a step (after the backward is queued): all ranks skip and stop together
                stop = self.guard.agree(nonfinite, stop_requested(), self.dev)
            engine.step()
            task.add_micro(stats, inputs, out, loss)
        return stats, self.guard.applied(engine), norm, stop

    # ---- reporting, checkpoints ----------------------------------------------------------------------------------
    def write(self, record: dict) -> None:
        """One metrics line (rank 0 writes), led by spec.record_fields."""
        if self.metrics is not None:
            self.metrics.write({**self.spec.record_fields, **record})

    def log(self, lr: float, norm: float | None) -> None:
        """The metrics line of the window that ends at this step (a collective), then a new window."""
        record = self.task.log_record(self.window, lr, norm)
        if record:
            self.write(record)
            self.progress.update(0, **self.task.progress_fields(record))
        self.window = self.task.new_window()

    def save(self, manager: CheckpointManager | None = None, finished: bool = False) -> None:
        """A checkpoint of everything the continuation needs into `manager` (default: the resume checkpoints); a
        collective."""
        state = {"step": self.step, "scheduler": self.scheduler.state_dict(), "rng": rng_state(),
                 "skipped": self.guard.skipped, "in_a_row": self.guard.in_a_row, **self.task.state_dict()}
        meta = self.task.checkpoint_meta(finished)
        window = self.task.window_state(self.window) if self.window is not None else None  # a collective
        if window is not None:
            meta = {**meta, "log_window": window}
        (manager or self.ckpt).save(self.engine, self.step, state, meta)

    # ---- the loop ------------------------------------------------------------------------------------------------
    def run(self) -> Any:
        """Set up, train to the end (an early stop, or a SIGTERM: status 'preempted' after a checkpoint), then the
        task's `on_finish(status)`, whose result is returned."""
        with contextlib.ExitStack() as cleanup:
            self.setup()
            cleanup.callback(self.task.close)
            if self.noop:  # a finished run resumed unchanged: say so, write nothing (no duplicate evaluation lines)
                self.echo(self.noop)
                return self.task.on_finish("noop")
            if self._own_metrics:
                cleanup.callback(self.metrics.close)
            spec = self.spec
            self.progress = progress(spec.total_steps, spec.progress_desc, unit="step", initial=self.step,
                                     leave=spec.progress_leave, enabled=self.rank == 0, bar=spec.progress)
            cleanup.callback(self.progress.close)
            preempt = cleanup.enter_context(D.Preemption())
            status = self.train(preempt)
            self.progress.close()
            return self.task.on_finish(status)

    def train(self, preempt: D.Preemption) -> str:
        """Optimizer steps to spec.total_steps or the task's early stop ('finished'), or to a SIGTERM agreed on by
        the ranks ('preempted': a checkpoint was saved after that step)."""
        spec, task, total = self.spec, self.task, self.spec.total_steps
        carried = self._carried  # the checkpoint's open log window (its sums over all ranks)
        self.window = task.restore_window(carried) if carried is not None else task.new_window()
        self.engine.train()
        while self.step < total and not task.stopped:
            task.before_step()
            lr = self.optimizer.param_groups[0]["lr"]
            logging = (self.step + 1) % spec.log_every == 0 or self.step + 1 == total
            stats, applied, norm, stop = self.train_step(logging, lambda: preempt.flag)
            self.step += 1
            task.after_step()
            if applied:
                self.scheduler.step()
                self.window.add(stats)
            self.guard.count(applied, self.step, who=f"{spec.who} " if spec.who else "",
                             detail=lambda: task.skip_detail(stats), advice=spec.skip_advice)
            self.progress.update(1)
            last = self.step == total
            evaluating = task.evaluates(self.step, last) and (not stop or task.evaluate_before_stop)
            saving = stop or (bool(spec.save_every) and self.step % spec.save_every == 0 and not last)
            if logging or evaluating or saving:  # collectives only where a decision needs them
                task.sync_counters()
            if logging:
                self.log(lr, norm)
            saved = task.on_evaluate() if evaluating else False  # True: it checkpointed
            if saving and not saved:
                self.save()
            if stop:
                self._say(f"SIGTERM: checkpoint saved at step {self.step} in {self.ckpt.root}; continue with "
                          f"--resume")
                return "preempted"
        return "finished"
