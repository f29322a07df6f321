"""The pretraining loop (MLM with NSP, with SOP, or alone: --objective) as a `Trainer`: setup / train_step / log /
evaluate / save / run. Metrics carry the sentence task's loss and accuracy under its name (nsp_*, sop_*) or leave
them out (MLM only).

One optimizer step = `accum` micro batches per rank (global micro batch k on rank k % world, engine/data/sampler.py),
then engine.step() at the boundary. Non-finite losses (bf16/fp32) skip the whole step on every rank (agreed by an
all-reduce) and are counted; fp16 overflows are DeepSpeed's loss scaler's (it lowers the scale and skips). Too many
skipped steps in a row stop training with an error. SIGTERM is turned into a flag that the ranks agree on in the same
two-element all-reduce at the end of every step: a checkpoint is saved right after that step and the run exits with
status 143 (resume with --resume).

Resume (--resume): the newest checkpoint that verifies (engine/train/checkpoint.py), on any number of ranks: the
data position is remapped through the samples consumed, so the global order continues where it stopped.

Host syncs: one per optimizer step (the non-finite and stop checks, after the backward is queued); statistics stay on
the device until a logging step (`LogWindow`); batches come from a background prefetch thread
(engine/data/prefetch.py). The model is wrapped for training by engine/parallelize.py only."""
from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from bertforge import deepspeed as ds
from bertforge import distributed as D
from bertforge.config import ModelConfig, preset
from bertforge.config.checks import flag
from bertforge.config.pretrain import PretrainConfig
from bertforge.data.batch import Batch
from bertforge.data.masking import most_frequent_token_accuracy
from bertforge.data.prefetch import Prefetcher
from bertforge.data.sampler import remap_position
from bertforge.errors import CheckpointError, ConfigError
from bertforge.io import write_json
from bertforge.log import result_echo
from bertforge.malloc import pin_mmap_threshold
from bertforge.optim import build_optimizer, param_groups, warmup_decay
from bertforge.parallelize import ParallelPlan, check_device_support, parallelize
from bertforge.train.step import StepGuard
from bertforge.train.checkpoint import CheckpointManager
from bertforge.provenance import environment
from bertforge.training.device_masking import DeviceMasker
from bertforge.progress import progress
from bertforge.train.metrics import MetricsWriter, Throughput, flops_per_token, peak_flops
from bertforge.training.profile import StepProfiler
from bertforge.train.resume import ResumePlan, continue_schedule, plan_resume
from bertforge.train.token_loss import backward_scale, step_num_items_on_device
from bertforge.train.rng import rng_state, seed_everything, set_rng_state
from bertforge.training.weights import load_initial_weights, pretraining_model

_echo = result_echo(__name__)  # the run's result line (stdout under the default log handler)

@dataclass
class RunResult:
    step: int
    status: str  # "finished" or "preempted"
    eval: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    skipped_steps: int = 0


def build_model_config(cfg: PretrainConfig, vocab_size: int) -> ModelConfig:
    """The preset with the config's overrides, the data's vocabulary size, dropout and kernel backend."""
    overrides = dict(cfg.model.model_overrides)
    if "vocab_size" in overrides and overrides["vocab_size"] != vocab_size:
        raise ConfigError(f"model vocab_size {overrides['vocab_size']} does not match the dataset's tokenizer "
                          f"({vocab_size} tokens)")
    overrides["vocab_size"] = vocab_size
    if cfg.model.dropout is not None:
        overrides.update(hidden_dropout_prob=cfg.model.dropout, attention_probs_dropout_prob=cfg.model.dropout)
    overrides.setdefault("kernels", cfg.parallel.kernels)
    overrides.setdefault("last_layer_subset", True)  # the last layer on the masked rows + [CLS] (model config)
    model_cfg = preset(cfg.model.preset, **overrides)
    if cfg.batch.max_seq_length > model_cfg.max_position_embeddings:
        raise ConfigError(f"{flag('max_seq_length')} {cfg.batch.max_seq_length} exceeds max_position_embeddings "
                          f"({model_cfg.max_position_embeddings})")
    return model_cfg


def model_inputs(batch: Batch, unpadded: bool, dev: torch.device, masker: DeviceMasker | None = None,
                 sentence_labels: bool = True) -> dict:
    """The forward's arguments of `batch` in one layout, on `dev`, with its MLM targets and (sentence_labels) its
    NSP / SOP labels. With a DeviceMasker (--masking device) the batch is unmasked and is masked here, on `dev`, in
    that layout."""
    inputs = batch.forward_inputs(unpadded)
    if masker is None:
        inputs.update(batch.mlm_targets(unpadded))
    if sentence_labels:
        inputs["next_sentence_label"] = batch.next_sentence_label
    inputs = {k: (v.to(dev, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    if masker is not None:
        if batch.mask_seed is None:
            raise ValueError("--masking device needs unmasked batches with a mask_seed (the source masked them "
                             "already)")
        inputs = masker(inputs, batch.special_mask(unpadded), int(batch.mask_seed))
    return inputs


@dataclass
class LogWindow:
    """Statistics of the applied steps since the last metrics line. The sums produced on the device stay there until
    a logging step, so steps between logs read nothing from the device."""

    sums: torch.Tensor  # (5,) float64 on the device: loss, mlm_loss, nsp_loss, mlm_correct, nsp_correct (NSP or SOP)
    mlm_count: int = 0  # masked tokens
    nsp_count: int = 0  # sentence-task labels (0 for MLM only)
    micro_batches: int = 0

    @classmethod
    def zeros(cls, dev: torch.device) -> "LogWindow":
        return cls(torch.zeros(5, dtype=torch.float64, device=dev))

    def add(self, other: "LogWindow") -> None:
        self.sums += other.sums
        self.mlm_count += other.mlm_count
        self.nsp_count += other.nsp_count
        self.micro_batches += other.micro_batches

    def reduce(self, dev: torch.device, task: str | None = "nsp") -> dict:
        """Means over all ranks (a collective): loss, mlm_loss, mlm_acc and the sentence task's {task}_loss,
        {task}_acc (task 'nsp' / 'sop'; left out when None); {} if empty."""
        w = D.all_reduce_sum(self.sums.tolist() + [self.mlm_count, self.nsp_count, self.micro_batches], dev)
        if w[7] <= 0:
            return {}
        n = w[7]
        out = {"loss": w[0] / n, "mlm_loss": w[1] / n, "mlm_acc": w[3] / max(w[5], 1)}
        if task is not None:
            out.update({f"{task}_loss": w[2] / n, f"{task}_acc": w[4] / max(w[6], 1)})
        return out


class Trainer:
    """One pretraining phase (or its resumption). Attributes, in the order `setup` fills them:"""

    cfg: PretrainConfig             # the settings, merged with a user's DeepSpeed JSON
    user_ds: dict | None            # that JSON's remaining keys
    accum: int                      # micro batches per rank per optimizer step
    run_dir: Path
    ckpt: CheckpointManager         # run_dir/checkpoints
    source: Prefetcher              # this rank's batches (engine/data/source.py behind the prefetcher)
    model_cfg: ModelConfig
    dev: torch.device
    masker: DeviceMasker | None     # --masking device
    task: str | None                # the sentence task: 'nsp', 'sop' or None (MLM only)
    engine: object                  # DeepSpeed engine (engine/parallelize.py)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    step: int                       # optimizer steps done
    guard: StepGuard                # skip gate, stop agreement, skipped steps in total and in a row
    metrics: MetricsWriter          # run_dir/metrics.jsonl + TensorBoard (rank 0)

    def __init__(self, cfg: PretrainConfig, explicit: frozenset = frozenset(),
                 source_factory: Callable | None = None):
        """`explicit`: fields given on the command line (a DeepSpeed JSON may not contradict them).
        `source_factory(cfg, rank, world)` -> BatchSource; default bertforge.data.source.open_source."""
        self.cfg, self.explicit = cfg, explicit
        if source_factory is None:
            from bertforge.data.source import open_source as source_factory
        self.source_factory = source_factory

    # ---- setup ---------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        pin_mmap_threshold()
        D.prepare_env()
        cfg = self.cfg
        self.user_ds = ds.load_user_config(cfg.parallel.deepspeed_config) if cfg.parallel.deepspeed_config else None
        if self.user_ds is not None:
            cfg = self.cfg = ds.merge_user_config(cfg, self.user_ds, set(self.explicit), D.world_size(),
                                                  source=cfg.parallel.deepspeed_config)
        self.accum = cfg.grad_accum(D.world_size())
        check_device_support(cfg.parallel.precision, cfg.parallel.kernels)
        self.run_dir = Path(cfg.run.output_dir)
        self.ckpt = CheckpointManager(self.run_dir, cfg.run.keep_last)
        latest = self.ckpt.latest()
        if cfg.run.resume and latest is None:
            raise ConfigError(f"--resume: no complete checkpoint in {self.ckpt.root}")
        if not cfg.run.resume and latest is not None:
            raise ConfigError(f"{self.run_dir} already holds checkpoints; pass --resume to continue it, or another "
                              f"--output-dir")

        source = self.source_factory(cfg, D.rank(), D.world_size())
        self.model_cfg = build_model_config(cfg, source.vocab_size)
        ds.init_distributed(cfg.parallel.dist_timeout_s)
        self.dev = D.device()
        tag = universal = self.noop = None
        self.plan = ResumePlan()
        if cfg.run.resume:  # the newest checkpoint that verifies; ZeRO 1-3 from another rank count: universal form
            tag = self.ckpt.resume_tag()
            if tag is None:
                raise ConfigError(f"--resume: no complete checkpoint in {self.ckpt.root}")
            self.plan = plan_resume(self.ckpt.meta(tag), cfg.to_flat(), self.ckpt.root / tag, cfg.planned_steps())
            self.noop = self.plan.noop  # the resume rule (engine/train/resume.py)
            if self.ckpt.needs_universal(tag, cfg.parallel.zero_stage):
                universal = self.ckpt.make_universal(tag)
        source.start()
        self.source = Prefetcher(source, cfg.batch.prefetch)
        self.masker = None
        if cfg.masking.masking == "device":
            self.masker = DeviceMasker(source.mask_token_id, source.replacement_probs, cfg.masking.mlm_probability,
                                       self.model_cfg.kernels, self.dev)

        seed_everything(cfg.run.seed)
        self.task = cfg.objective.sentence_task
        model = pretraining_model(self.model_cfg, cfg.objective.objective)
        if cfg.model.init_from and not cfg.run.resume:
            load_initial_weights(model, cfg.model.init_from)
        model.to(self.dev)
        o = cfg.optim
        self.optimizer = build_optimizer(o.optimizer, param_groups(model, o.weight_decay), o.lr, o.betas, o.eps,
                                         fused=False if o.optimizer == "adamw" and self.dev.type == "cpu" else None)
        ds_config = ds.build_ds_config(micro_batch=cfg.batch.micro_batch, global_batch=cfg.batch.global_batch,
                                       grad_accum=self.accum, max_grad_norm=o.max_grad_norm,
                                       zero_stage=cfg.parallel.zero_stage, precision=cfg.parallel.precision,
                                       user=self.user_ds, load_universal=universal is not None)
        plan = ParallelPlan(ds_config, compile=cfg.parallel.compile,
                            activation_checkpointing=cfg.parallel.activation_checkpointing)
        self.engine, gate = parallelize(model, self.optimizer, plan, log=D.log0)
        # after parallelize: its skip gate replaces optimizer.step, which a scheduler built before would see as
        # "overridden after learning rate scheduler initialization" (torch tracks the step method it wrapped)
        self.scheduler = warmup_decay(self.optimizer, cfg.warmup(), cfg.total_steps(), o.decay, o.decay_power)
        self.guard = StepGuard(gate, cfg.parallel.max_skipped_steps, cfg.parallel.precision == "fp16")
        # torch's generator per rank: dropout is keyed per sample by the batches' dropout_ids, not drawn from it
        seed_everything(cfg.run.seed + 1000 * D.rank())

        self.step = 0
        if cfg.run.resume:
            self._restore(tag, self.ckpt.load(self.engine, tag, universal=universal))

        rank0 = D.rank() == 0
        self.metrics = MetricsWriter(self.run_dir, enabled=rank0, resume_step=self.step if cfg.run.resume else None,
                                     report_to=cfg.run.report_to, params=cfg.to_flat())
        env = environment()  # a collective (the hosts of all ranks): every rank calls it
        if rank0:
            write_json(self.run_dir / "config.json",
                       {"train": cfg.to_flat(), "model": dataclasses.asdict(self.model_cfg),
                        "applied_dropout": self.model_cfg.applied_dropout(),
                        "world_size": D.world_size(), "grad_accum": self.accum, "extended": self.plan.extended,
                        "environment": env})

    def _restore(self, tag: str, state: dict) -> None:
        """Schedule, counters, data position and RNG from a checkpoint's trainer state. Written by another number of
        ranks (or micro batch): the data position is remapped through the samples consumed, and torch's generator is
        reseeded per rank and step (the saved states belong to the old ranks; dropout does not use it: its masks
        are keyed per sample)."""
        cfg, world, rank = self.cfg, D.world_size(), D.rank()
        self.scheduler.load_state_dict(state["scheduler"])
        continue_schedule(self.scheduler, self.plan, D.log0, cfg.warmup(), cfg.optim.decay)  # the next step's lr
        self.step, self.guard.skipped, self.guard.in_a_row = state["step"], state["skipped"], state["in_a_row"]
        saved_world = state["saved_world_size"]
        saved_micro = int(self.ckpt.meta(tag).get("train_config", {}).get("micro_batch", cfg.batch.micro_batch))
        data = dict(state["data"])
        try:
            data["position"] = remap_position(int(data["position"]), saved_world, saved_micro, world,
                                              cfg.batch.micro_batch)
        except ValueError as exc:
            raise CheckpointError(f"{self.ckpt.root / tag}: cannot continue its data order here: {exc}") from None
        self.source.load_state_dict(data)
        if saved_world == world:
            set_rng_state(state["rng"])
        else:
            seed_everything(cfg.run.seed + 1000 * rank + 1_000_003 * self.step)
            D.log0(f"checkpoint of {saved_world} ranks resumed on {world}: data position {state['data']['position']} "
                   f"-> {data['position']} micro batches per rank (same global order)")
        D.log0(f"resumed from {self.ckpt.root / tag} at step {self.step}")

    # ---- one optimizer step --------------------------------------------------------------------------------------
    def train_step(self, logging: bool, stop_requested: Callable[[], bool] = lambda: False
                   ) -> tuple[LogWindow, bool, float | None, bool]:
        """`accum` micro batches, one update (or a skip). Returns (this step's statistics, whether the update was
        applied, the gradient norm when `logging` and it is known before the step, whether any rank asked to stop:
        `stop_requested()` is read at the last micro batch and agreed on in the step's all-reduce)."""
        cfg, engine = self.cfg, self.engine
        self.guard.open()
        stats = LogWindow.zeros(self.dev)
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.dev)
        norm, stop = None, False
        micro = []
        for _ in range(self.accum):
            batch = self.source.next_batch()
            self._pending[0] += batch.num_tokens
            self._pending[1] += batch.num_samples
            micro.append(model_inputs(batch, cfg.batch.unpadded, self.dev, self.masker, self.task is not None))
        # the MLM loss is one mean over the step's masked tokens, all micro batches and ranks (train/token_loss.py)
        n_masked = step_num_items_on_device([m["mlm_labels"] for m in micro], self.dev)
        scale = backward_scale(self.accum, D.world_size())
        for micro_step, inputs in enumerate(micro):
            out = engine(**inputs, num_items_in_batch=n_masked)
            if scale != 1:  # loss = mlm_loss * scale + the sentence loss (DeepSpeed averages over accum and ranks)
                out.loss = out.loss + out.mlm_loss * (scale - 1)
                out.mlm_loss = out.mlm_loss * scale
            nonfinite |= ~torch.isfinite(out.loss.detach())
            engine.backward(out.loss)  # NaN grads are harmless: the update is vetoed below
            if micro_step == self.accum - 1:
                if logging:
                    norm = ds.grad_norm_before_step(engine)
                # the one host sync of a step (after the backward is queued): all ranks skip and stop together
                stop = self.guard.agree(nonfinite, stop_requested(), self.dev)
            engine.step()
            labels = inputs["mlm_labels"]
            sentence = torch.zeros(2, device=out.loss.device)  # the sentence task's loss and correct labels
            if self.task is not None:
                nsp = inputs["next_sentence_label"]
                sentence = torch.stack([out.nsp_loss.detach(), (out.nsp_logits.argmax(-1) == nsp).sum()])
                stats.nsp_count += nsp.numel()
            stats.sums += torch.stack([out.loss.detach(), out.mlm_loss.detach(), sentence[0],
                                       (out.mlm_predictions == labels).sum(), sentence[1]]).double()
            stats.mlm_count += labels.numel()
            stats.micro_batches += 1
        return stats, self.guard.applied(engine), norm, stop

    # ---- reporting -----------------------------------------------------------------------------------------------
    def log(self, lr: float, norm: float | None) -> None:
        """Write the metrics line of the window that ends at this step (a collective)."""
        now = time.perf_counter()
        means = self._window.reduce(self.dev, self.task)
        tok_s, samp_s = self.throughput.rates()
        if means:
            record = {"step": self.step, "split": "train", **means, "lr": lr,
                      "grad_norm": norm if norm is not None else ds.grad_norm(self.engine),
                      "loss_scale": ds.loss_scale(self.engine), "tokens_per_s": tok_s, "samples_per_s": samp_s,
                      "mfu": tok_s * self._fpt / (self._peak * D.world_size()) if self._peak else None,
                      "skipped_steps": self.guard.skipped,
                      "data_wait_frac": (self.source.wait_s - self._log_clock[1]) / max(now - self._log_clock[0],
                                                                                         1e-9),
                      "time": now - self._t_start}
            self.metrics.write(record)
            self.result.train = record
            task_acc = {f"{self.task}_acc": record[f"{self.task}_acc"]} if self.task else {}
            self.progress.update(0, loss=record["loss"], mlm_acc=record["mlm_acc"], **task_acc, tok_s=f"{tok_s:.0f}")
        self._log_clock = (now, self.source.wait_s)
        self._window = LogWindow.zeros(self.dev)

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Held-out MLM accuracy, the sentence task's ({task}_acc: NSP or SOP; none for MLM only) and the unigram
        baseline (the accuracy of always predicting the held-out split's most frequent masked token) over the first
        --eval-batches held-out micro batches of the global order, shared out over the ranks: the same samples, once
        each, for any number of ranks and on every call. A blend of datasets is scored over --eval-batches of each
        dataset's own held-out split, and per dataset too: the same keys prefixed '<dataset folder name>/'."""
        n = self.cfg.run.eval_batches
        out = self._score(list(self.source.eval_batches(n)))  # this rank's share
        blend = getattr(self.source, "blend", None) or []
        if len(blend) > 1:
            for entry in blend:
                per = self._score(list(self.source.eval_batches(n, dataset=entry.path)))
                out.update({f"{Path(entry.path).name}/{k}": v for k, v in per.items()})
        return out

    def _score(self, batches: list) -> dict:
        """evaluate's metrics over this rank's held-out `batches` (a collective)."""
        saved = rng_state()
        engine, vocab = self.engine, self.model_cfg.vocab_size
        engine.eval()
        sums = torch.zeros(6, dtype=torch.float64)  # loss, mlm_correct, mlm_count, nsp_correct, nsp_count, batches
        label_counts = torch.zeros(vocab, dtype=torch.float64)
        forwards = len(batches)
        if self.cfg.parallel.zero_stage == 3:  # each forward gathers parameters: every rank runs as many
            forwards = int(D.all_reduce_max([forwards], self.dev)[0])
        for i in range(forwards):
            batch = batches[i] if i < len(batches) else (batches[0] if batches else self.source.batch_at(0))
            inputs = model_inputs(batch, self.cfg.batch.unpadded, self.dev, self.masker, self.task is not None)
            out = engine(**inputs)
            if i >= len(batches):
                continue  # a ZeRO-3 filler forward: not scored
            labels = inputs["mlm_labels"]
            nsp_correct = nsp_count = 0.0
            if self.task is not None:
                nsp = inputs["next_sentence_label"]
                nsp_correct, nsp_count = float((out.nsp_logits.argmax(-1) == nsp).sum()), nsp.numel()
            sums += torch.tensor([float(out.loss), float((out.mlm_predictions == labels).sum()), labels.numel(),
                                  nsp_correct, nsp_count, 1], dtype=torch.float64)
            label_counts += torch.bincount(labels.cpu(), minlength=vocab).double()
        engine.train()
        set_rng_state(saved)
        totals = D.all_reduce_sum(sums.tolist() + label_counts.tolist(), self.dev)
        loss, mlm_c, mlm_n, nsp_c, nsp_n, batches = totals[:6]
        out = {"loss": loss / max(batches, 1), "mlm_acc": mlm_c / max(mlm_n, 1),
               "mlm_unigram_acc": most_frequent_token_accuracy(totals[6:]), "masked_tokens": int(mlm_n)}
        if self.task is not None:
            out[f"{self.task}_acc"] = nsp_c / max(nsp_n, 1)
        return out

    def save(self, finished: bool = False) -> None:
        """A checkpoint of everything the continuation needs (a collective)."""
        trainer_state = {"step": self.step, "scheduler": self.scheduler.state_dict(),
                         "data": self.source.state_dict(), "rng": rng_state(), "skipped": self.guard.skipped,
                         "in_a_row": self.guard.in_a_row}
        meta = {"train_config": self.cfg.to_flat(), "model_config": dataclasses.asdict(self.model_cfg),
                "finished": finished, "extended": self.plan.extended,
                "tokenizer_dir": str(self.source.tokenizer_dir) if self.source.tokenizer_dir else None}
        self.ckpt.save(self.engine, self.step, trainer_state, meta)

    # ---- the loop ------------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Set up, train to the end (or to a SIGTERM), evaluate, save, export. Returns the run's result."""
        with contextlib.ExitStack() as cleanup:
            self.setup()
            cleanup.callback(self.source.close)
            cleanup.callback(self.metrics.close)
            return self._train(cleanup)

    def _train(self, cleanup: contextlib.ExitStack) -> RunResult:
        cfg, rank = self.cfg, D.rank()
        if self.noop:  # a finished run resumed unchanged: say so, write nothing (no duplicate evaluation lines)
            D.log0(self.noop)
            return RunResult(step=self.step, status="finished")
        total = cfg.total_steps()
        self._fpt = flops_per_token(self.model_cfg, cfg.batch.max_seq_length, cfg.masking.mlm_probability)
        self._peak = peak_flops(cfg.run.peak_flops)
        self.progress = progress(total, "pretrain", unit="step", initial=self.step, enabled=rank == 0,
                                 bar=cfg.run.progress)
        cleanup.callback(self.progress.close)
        self.throughput = Throughput()
        self._window = LogWindow.zeros(self.dev)
        self._pending = [0, 0]  # tokens and samples of all steps since the last collective (throughput)
        self.result = RunResult(step=self.step, status="finished")
        self._t_start = time.perf_counter()
        self._log_clock = (self._t_start, self.source.wait_s)  # data_wait_frac: share of wall time on the loader
        profiler = StepProfiler(self.run_dir, cfg.run.profile_start if cfg.run.profile_start >= 0 else
                                cfg.run.log_every, cfg.run.profile_steps, enabled=rank == 0)
        preempt = cleanup.enter_context(D.Preemption())
        while self.step < total:
            profiler.before_step(self.step)
            lr = self.optimizer.param_groups[0]["lr"]
            logging = (self.step + 1) % cfg.run.log_every == 0 or self.step + 1 == total
            stats, applied, norm, stop = self.train_step(logging, lambda: preempt.flag)
            self.step += 1
            self._report_profile(profiler.after_step(self.step))
            if applied:
                self.scheduler.step()
                self._window.add(stats)
            self.guard.count(applied, self.step, detail=lambda: f" (last {stats.sums[0].item() / self.accum})",
                             advice="lower --lr, raise --warmup-steps")
            evaluating = bool(cfg.run.eval_every) and self.step % cfg.run.eval_every == 0 and self.step < total
            saving = bool(cfg.run.save_every) and self.step % cfg.run.save_every == 0 and self.step < total
            self.progress.update(1)
            # Collectives only where a decision needs them (the stop request was agreed on in the step).
            if logging or evaluating or saving:
                reduced = D.all_reduce_sum(self._pending, self.dev)
                self.throughput.add(int(reduced[0]), int(reduced[1]))
                self._pending = [0, 0]
            if logging:
                self.log(lr, norm)
            if evaluating and not stop:  # a stop saves first: the launcher's grace period is short
                ev = self.evaluate()
                self.metrics.write({"step": self.step, "split": "eval", **ev})
                self.progress.write(_eval_line(self.step, ev))
            if stop:
                self.save()
                D.log0(f"SIGTERM: checkpoint saved at step {self.step} in {self.ckpt.root}; continue with --resume")
                return RunResult(step=self.step, status="preempted", train=self.result.train,
                                 skipped_steps=self.guard.skipped)
            if saving:
                self.save()
        self.progress.close()
        self.source.close()
        self.result.eval = self.evaluate()
        self.metrics.write({"step": self.step, "split": "eval", **self.result.eval})
        if cfg.run.final_checkpoint:
            self.save(finished=True)
        self.result.step, self.result.skipped_steps = self.step, self.guard.skipped
        if rank == 0:
            _echo(_eval_line(self.step, self.result.eval))
        if cfg.run.export_hf and rank == 0:
            from bertforge.training.weights import export_checkpoint

            export_checkpoint(self.ckpt.root / self.ckpt.latest(), self.run_dir / "hf",
                              tokenizer_dir=self.source.tokenizer_dir)
        D.barrier()
        return self.result

    def _report_profile(self, profiled: dict | None) -> None:
        if not profiled:
            return
        idle = profiled["device_idle_frac"]
        self.progress.write(
            f"profile of steps {self.step - profiled['steps'] + 1}-{self.step}: {profiled['step_s']:.4f} s/step"
            + (f", device idle {idle:.1%}" if idle is not None else "") + f" ({self.run_dir}/profile.json)")


def pretrain(cfg: PretrainConfig, explicit: frozenset = frozenset(),
             source_factory: Callable | None = None) -> RunResult:
    """Run (or resume) one pretraining phase; see `Trainer`."""
    return Trainer(cfg, explicit, source_factory).run()


def _eval_line(step: int, ev: dict) -> str:
    task = "".join(f"{name.upper()} acc {ev[f'{name}_acc']:.4f}, " for name in ("nsp", "sop") if f"{name}_acc" in ev)
    per = "".join(f"; {k[:-len('/mlm_acc')]}: MLM acc {v:.4f}" for k, v in ev.items() if k.endswith("/mlm_acc"))
    return (f"held-out @ step {step}: MLM acc {ev['mlm_acc']:.4f} (unigram baseline {ev['mlm_unigram_acc']:.4f}), "
            f"{task}loss {ev['loss']:.4f}{per}")
