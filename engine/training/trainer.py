"""Pretraining (MLM with NSP, with SOP, or alone: --objective) as a task of the one training runtime
(`bertforge.train.trainer.Trainer`: set-up, steps, skip gate, stop agreement, preemption, checkpoints, resume, log
window, progress and metrics are the runtime's). Metrics carry the sentence task's loss and accuracy under its name
(nsp_*, sop_*) or leave them out (MLM only).

Global micro batch k runs on rank k % world (engine/data/sampler.py). Non-finite losses (bf16/fp32) skip the whole
step on every rank and are counted; fp16 overflows are DeepSpeed's loss scaler's. A SIGTERM checkpoints right after
the agreed step and the run exits with status 143 (resume with --resume).

Resume (--resume): the newest checkpoint that verifies (engine/train/checkpoint.py), on any number of ranks: the
data position is remapped through the samples consumed, so the global order continues where it stopped.

Host syncs: one per optimizer step (the runtime's); statistics stay on the device until a logging step
(`LogWindow`); batches come from a background prefetch thread (engine/data/prefetch.py)."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from bertforge import deepspeed as ds
from bertforge import distributed as D
from bertforge.config import ModelConfig, preset
from bertforge.config.pretrain import PretrainConfig
from bertforge.data.batch import Batch
from bertforge.data.masking import most_frequent_token_accuracy
from bertforge.data.prefetch import Prefetcher
from bertforge.data.sampler import remap_position
from bertforge.errors import CheckpointError, ConfigError
from bertforge.io import check_folder, write_json
from bertforge.log import result_echo
from bertforge.optim import param_groups
from bertforge.provenance import environment
from bertforge.train.metrics import Throughput, flops_per_token, peak_flops
from bertforge.train.rng import rng_state, set_rng_state
from bertforge.train.token_loss import step_num_items_on_device
from bertforge.train.trainer import ResumePoint, RunSpec, Trainer, TrainTask
from bertforge.training.device_masking import DeviceMasker
from bertforge.training.profile import StepProfiler
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
    return preset(cfg.model.preset, **overrides)  # the length was checked against its positions (PretrainConfig)


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

    def totals(self, dev: torch.device) -> list[float]:
        """The sums and counts over all ranks (a collective): the 5 sums, mlm_count, nsp_count, micro_batches."""
        return D.all_reduce_sum(self.sums.tolist() + [self.mlm_count, self.nsp_count, self.micro_batches], dev)

    def state(self, dev: torch.device, per_step: int) -> dict | None:
        """The window so far over all ranks for a checkpoint's meta.json (a collective; None when it is empty:
        micro_batches is the same on every rank). `per_step`: micro batches per optimizer step, all ranks."""
        if not self.micro_batches:
            return None
        w = self.totals(dev)
        return {"sums": w[:5], "mlm_count": int(w[5]), "nsp_count": int(w[6]), "micro_batches": int(w[7]),
                "micro_batches_per_step": per_step}

    @classmethod
    def from_state(cls, state: dict, dev: torch.device, per_step: int) -> "LogWindow":
        """A window holding a `state()` read back from meta.json. The loss sums are sums of micro-batch losses:
        resumed with another number of micro batches per step, they and micro_batches are rescaled by the ratio, so
        each step keeps its weight in the mean. ValueError / KeyError / TypeError for a malformed state."""
        sums = torch.tensor([float(x) for x in state["sums"]], dtype=torch.float64, device=dev)
        if sums.numel() != 5:
            raise ValueError(f"expected 5 sums, got {sums.numel()}")
        saved = int(state["micro_batches_per_step"])
        micro = int(state["micro_batches"])
        if saved != per_step:
            sums[:3] *= per_step / saved
            micro = micro * per_step // saved
        return cls(sums, int(state["mlm_count"]), int(state["nsp_count"]), micro)

    def reduce(self, dev: torch.device, task: str | None = "nsp") -> dict:
        """Means over all ranks (a collective): loss, mlm_loss, mlm_acc and the sentence task's {task}_loss,
        {task}_acc (task 'nsp' / 'sop'; left out when None); {} if empty."""
        w = self.totals(dev)
        if w[7] <= 0:
            return {}
        n = w[7]
        out = {"loss": w[0] / n, "mlm_loss": w[1] / n, "mlm_acc": w[3] / max(w[5], 1)}
        if task is not None:
            out.update({f"{task}_loss": w[2] / n, f"{task}_acc": w[4] / max(w[6], 1)})
        return out


class PretrainingTask(TrainTask):
    """Pretraining as a task of the runtime (bertforge.train.trainer.Trainer). Attributes, in the order its hooks
    fill them:"""

    cfg: PretrainConfig             # the settings, merged with a user's DeepSpeed JSON
    trainer: Trainer
    source: Prefetcher              # this rank's batches (engine/data/source.py behind the prefetcher)
    model_cfg: ModelConfig
    masker: DeviceMasker | None     # --masking device
    task: str | None                # the sentence task: 'nsp', 'sop' or None (MLM only)
    result: RunResult

    stopped = False                 # pretraining runs to its last step
    evaluate_before_stop = False    # a stop saves first: the launcher's grace period is short
    log_grad_norm = True

    def __init__(self, cfg: PretrainConfig, source_factory: Callable | None = None, explicit: frozenset = frozenset()):
        """`source_factory(cfg, rank, world)` -> BatchSource; default bertforge.data.source.open_source. `explicit`:
        the fields the user gave (a resume keeps those as given)."""
        self.cfg, self.explicit = cfg, explicit
        if source_factory is None:
            from bertforge.data.source import open_source as source_factory
        self.source_factory = source_factory
        self.source = None
        self.task = cfg.objective.sentence_task

    # ---- setup ---------------------------------------------------------------------------------------------------
    def setup(self, trainer: Trainer) -> None:
        """Check the run folder against --resume, open this rank's batch source and build the model config (all
        before the process group: bad input fails first)."""
        cfg, self.trainer = self.cfg, trainer
        self.run_dir = Path(cfg.run.output_dir)
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ConfigError(f"--output-dir {self.run_dir}: is a file; give a folder path")
        ckpt = trainer.ckpt
        latest = ckpt.latest()
        if cfg.run.resume and latest is None:
            raise ConfigError(f"--resume: no complete checkpoint in {ckpt.root}")
        if not cfg.run.resume and latest is not None:
            raise ConfigError(f"{self.run_dir} already holds checkpoints; pass --resume to continue it, or another "
                              f"--output-dir")
        if cfg.model.init_from and not cfg.run.resume:  # a resume takes its weights from its checkpoint
            check_folder(cfg.model.init_from, "--init-from", "a Hugging Face BERT folder, a `bertforge pretrain` run "
                         "folder or one of its checkpoints (RUN/checkpoints/step_N)")
        self._source = self.source_factory(cfg, trainer.rank, trainer.world)
        self.model_cfg = build_model_config(cfg, self._source.vocab_size)

    def after_join(self) -> None:
        """Start this rank's loader (behind the prefetcher) and, --masking device, the device masker."""
        cfg, source = self.cfg, self._source
        source.start()
        self.source = Prefetcher(source, cfg.batch.prefetch)
        self.masker = None
        if cfg.masking.masking == "device":
            self.masker = DeviceMasker(source.mask_token_id, source.replacement_probs, cfg.masking.mlm_probability,
                                       self.model_cfg.kernels, self.trainer.dev)

    def resume_point(self) -> ResumePoint | None:
        """--resume: the newest checkpoint that verifies, checked by the resume rule against this config."""
        if not self.cfg.run.resume:
            return None
        ckpt = self.trainer.ckpt
        tag = ckpt.resume_tag()
        if tag is None:
            raise ConfigError(f"--resume: no complete checkpoint in {ckpt.root}")
        self._keep_held_out_set(ckpt.meta(tag).get("train_config", {}))
        return ResumePoint(ckpt, tag, check=self.cfg.to_flat(), planned_steps=self.cfg.planned_steps())

    def _keep_held_out_set(self, saved: dict) -> None:
        """A checkpoint whose config counts its held-out set in micro batches (`eval_batches`, which --eval-samples
        replaced): unless --eval-samples is given, the resume scores the samples that run scored (eval_batches x its
        micro batch), so its held-out metrics stay comparable across the resume; one line says which."""
        if "eval_batches" not in saved or "eval_samples" in saved:
            return
        batches, micro = int(saved["eval_batches"]), int(saved.get("micro_batch", self.cfg.batch.micro_batch))
        if "eval_samples" in self.explicit:
            D.log0(f"--resume: the checkpoint's run scored {batches} held-out micro batches of {micro} "
                   f"({batches * micro} samples); this resume scores --eval-samples {self.cfg.run.eval_samples}")
            return
        self.cfg.run.eval_samples = batches * micro
        params = self.trainer.spec.report_params  # the trackers' copy of the settings, taken before the resume
        if params is not None:
            params["eval_samples"] = batches * micro
        D.log0(f"--resume: the checkpoint's run scored --eval-batches {batches} held-out micro batches of {micro}: "
               f"this resume scores the same {batches * micro} samples (--eval-samples {batches * micro}; give "
               f"--eval-samples N for another number)")

    def build_model(self, resuming: bool) -> nn.Module:
        model = pretraining_model(self.model_cfg, self.cfg.objective.objective)
        if self.cfg.model.init_from and not resuming:
            load_initial_weights(model, self.cfg.model.init_from)
        return model

    def param_groups(self, model: nn.Module) -> list[dict]:
        return param_groups(model, self.cfg.optim.weight_decay)

    def restore(self, state: dict, point: ResumePoint) -> None:
        """The data position of the checkpoint's trainer state. Written by another number of ranks (or micro
        batch): remapped through the samples consumed, so the global order continues where it stopped."""
        cfg, world, tag = self.cfg, self.trainer.world, point.tag
        self._resumed_from = point.manager.root / tag
        saved_world = state["saved_world_size"]
        saved_micro = int(point.manager.meta(tag).get("train_config", {}).get("micro_batch", cfg.batch.micro_batch))
        data = dict(state["data"])
        try:
            data["position"] = remap_position(int(data["position"]), saved_world, saved_micro, world,
                                              cfg.batch.micro_batch)
        except ValueError as exc:
            raise CheckpointError(f"{point.manager.root / tag}: cannot continue its data order here: {exc}") from None
        self.source.load_state_dict(data)
        if saved_world != world:
            D.log0(f"checkpoint of {saved_world} ranks resumed on {world}: data position {state['data']['position']} "
                   f"-> {data['position']} micro batches per rank (same global order)")

    def on_start(self) -> None:
        """RUN/config.json (rank 0; its environment block is a collective), the loop's clocks and counters."""
        cfg, t = self.cfg, self.trainer
        env = environment()  # a collective (the hosts of all ranks): every rank calls it
        if t.rank == 0:
            # "train" repeats the run as planned (`--config RUN/config.json`): not a resume, no extension (each
            # extension is listed under "extended"; the checkpoints' meta.json keeps the launch's own settings)
            planned = {**cfg.to_flat(), "resume": False, "extend_steps": 0}
            write_json(self.run_dir / "config.json",
                       {"train": planned, "model": dataclasses.asdict(self.model_cfg),
                        "applied_dropout": self.model_cfg.applied_dropout(),
                        "world_size": t.world, "grad_accum": t.accum, "extended": t.plan.extended,
                        "environment": env})
        self._fpt = flops_per_token(self.model_cfg, cfg.batch.max_seq_length, cfg.masking.mlm_probability)
        self._peak = peak_flops(cfg.run.peak_flops)
        self.throughput = Throughput()
        self._pending = [0, 0]  # tokens and samples of all steps since the last collective (throughput)
        self.result = RunResult(step=t.step, status="finished")
        self._t_start = time.perf_counter()
        self._log_clock = (self._t_start, self.source.wait_s)  # data_wait_frac: share of wall time on the loader
        self.profiler = StepProfiler(self.run_dir, cfg.run.profile_start if cfg.run.profile_start >= 0 else
                                     cfg.run.log_every, cfg.run.profile_steps, enabled=t.rank == 0)

    def close(self) -> None:
        if self.source is not None:
            self.source.close()

    # ---- one optimizer step --------------------------------------------------------------------------------------
    def micro_batches(self, step: int) -> list[dict]:
        micro = []
        for _ in range(self.trainer.accum):
            batch = self.source.next_batch()
            self._pending[0] += batch.num_tokens
            self._pending[1] += batch.num_samples
            micro.append(model_inputs(batch, self.cfg.batch.unpadded, self.trainer.dev, self.masker,
                                      self.task is not None))
        return micro

    def count_items(self, batches: list[dict]) -> torch.Tensor:
        """The step's masked tokens, all micro batches and ranks, on the device (no host sync)."""
        return step_num_items_on_device([m["mlm_labels"] for m in batches], self.trainer.dev)

    def forward(self, engine, inputs: dict, num_items: torch.Tensor, scale: int):
        out = engine(**inputs, num_items_in_batch=num_items)
        if scale != 1:  # loss = mlm_loss * scale + the sentence loss (DeepSpeed averages over accum and ranks)
            out.loss = out.loss + out.mlm_loss * (scale - 1)
            out.mlm_loss = out.mlm_loss * scale
        return out.loss, out

    def new_window(self) -> LogWindow:
        return LogWindow.zeros(self.trainer.dev)

    def window_state(self, window: LogWindow) -> dict | None:
        t = self.trainer
        return window.state(t.dev, t.accum * t.world)

    def restore_window(self, state: dict) -> LogWindow:
        t = self.trainer
        try:  # read on every rank: a bad field stops them all
            window = LogWindow.from_state(state, t.dev, t.accum * t.world)
        except (ValueError, KeyError, TypeError, ZeroDivisionError) as exc:
            raise CheckpointError(f"{self._resumed_from}/meta.json: \"log_window\" does not read "
                                  f"({type(exc).__name__}: {exc}); remove that field to resume with a fresh log "
                                  f"window") from None
        return window if t.rank == 0 else self.new_window()  # the sums are over all ranks: rank 0 holds them

    def add_micro(self, stats: LogWindow, inputs: dict, out, loss: torch.Tensor) -> None:
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

    def skip_detail(self, stats: LogWindow) -> str:
        return f" (last {stats.sums[0].item() / self.trainer.accum})"

    def before_step(self) -> None:
        self.profiler.before_step(self.trainer.step)

    def after_step(self) -> None:
        profiled = self.profiler.after_step(self.trainer.step)
        if not profiled:
            return
        idle, step = profiled["device_idle_frac"], self.trainer.step
        self.trainer.progress.write(
            f"profile of steps {step - profiled['steps'] + 1}-{step}: {profiled['step_s']:.4f} s/step"
            + (f", device idle {idle:.1%}" if idle is not None else "") + f" ({self.run_dir}/profile.json)")

    def sync_counters(self) -> None:
        """Tokens and samples of the steps since the last collective, summed over the ranks (throughput)."""
        reduced = D.all_reduce_sum(self._pending, self.trainer.dev)
        self.throughput.add(int(reduced[0]), int(reduced[1]))
        self._pending = [0, 0]

    # ---- reporting -----------------------------------------------------------------------------------------------
    def log_record(self, window: LogWindow, lr: float, norm: float | None) -> dict | None:
        """The metrics line of the window that ends at this step (a collective); None for an empty window."""
        t, now = self.trainer, time.perf_counter()
        means = window.reduce(t.dev, self.task)
        tok_s, samp_s = self.throughput.rates()
        record = None
        if means:
            record = {"step": t.step, "split": "train", **means, "lr": lr,
                      "grad_norm": norm if norm is not None else ds.grad_norm(t.engine),
                      "loss_scale": ds.loss_scale(t.engine), "tokens_per_s": tok_s, "samples_per_s": samp_s,
                      "mfu": tok_s * self._fpt / (self._peak * t.world) if self._peak else None,
                      "skipped_steps": t.guard.skipped,
                      "data_wait_frac": (self.source.wait_s - self._log_clock[1]) / max(now - self._log_clock[0],
                                                                                         1e-9),
                      "time": now - self._t_start}
            self.result.train = record
        self._log_clock = (now, self.source.wait_s)
        return record

    def progress_fields(self, record: dict) -> dict:
        task_acc = {f"{self.task}_acc": record[f"{self.task}_acc"]} if self.task else {}
        return {"loss": record["loss"], "mlm_acc": record["mlm_acc"], **task_acc,
                "tok_s": f"{record['tokens_per_s']:.0f}"}

    def evaluates(self, step: int, last: bool) -> bool:
        every = self.cfg.run.eval_every
        return bool(every) and step % every == 0 and not last  # the last step's evaluation is on_finish's

    def on_evaluate(self) -> bool:
        step = self.trainer.step
        ev = self.evaluate()
        self.trainer.write({"step": step, "split": "eval", **ev})
        self.trainer.progress.write(_eval_line(step, ev))
        return False

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Held-out loss (MLM per masked token + the sentence task's per sample), MLM accuracy, the sentence task's
        ({task}_acc: NSP or SOP; none for MLM only) and the unigram baseline (the accuracy of always predicting the
        held-out split's most frequent masked token) over the first --eval-samples held-out samples, host-masked
        and shared out over the ranks in micro batches: the same masked samples, once each, for any --micro-batch,
        number of ranks or --masking, and on every call. A blend of datasets is scored over --eval-samples of each
        dataset's own held-out split, and per dataset too: the same keys prefixed '<dataset folder name>/'."""
        n = self.cfg.run.eval_samples
        out = self._score(list(self.source.held_out_batches(n)))  # this rank's share
        blend = getattr(self.source, "blend", None) or []
        if len(blend) > 1:
            for entry in blend:
                per = self._score(list(self.source.held_out_batches(n, dataset=entry.path)))
                out.update({f"{Path(entry.path).name}/{k}": v for k, v in per.items()})
        return out

    def _score(self, batches: list) -> dict:
        """evaluate's metrics over this rank's held-out `batches` (a collective)."""
        saved = rng_state()
        t = self.trainer
        engine, vocab, dev = t.engine, self.model_cfg.vocab_size, t.dev
        engine.eval()
        sums = torch.zeros(6, dtype=torch.float64)  # mlm_loss, mlm_correct, mlm_count, nsp_loss, nsp_correct, nsp_count
        label_counts = torch.zeros(vocab, dtype=torch.float64)
        forwards = len(batches)
        if self.cfg.parallel.zero_stage == 3:  # each forward gathers parameters: every rank runs as many
            forwards = int(D.all_reduce_max([forwards], dev)[0])
        for i in range(forwards):
            batch = batches[i] if i < len(batches) else (batches[0] if batches else self.source.batch_at(0))
            masker = self.masker if batch.mask_seed is not None else None  # held-out batches come masked
            inputs = model_inputs(batch, self.cfg.batch.unpadded, dev, masker, self.task is not None)
            out = engine(**inputs)
            if i >= len(batches):
                continue  # a ZeRO-3 filler forward: not scored
            labels = inputs["mlm_labels"]  # means over a batch become sums: batches of any size weigh alike
            nsp_loss = nsp_correct = nsp_count = 0.0
            if self.task is not None:
                nsp = inputs["next_sentence_label"]
                nsp_count = nsp.numel()
                nsp_loss, nsp_correct = float(out.nsp_loss) * nsp_count, float((out.nsp_logits.argmax(-1) == nsp).sum())
            sums += torch.tensor([float(out.mlm_loss) * labels.numel(), float((out.mlm_predictions == labels).sum()),
                                  labels.numel(), nsp_loss, nsp_correct, nsp_count], dtype=torch.float64)
            label_counts += torch.bincount(labels.cpu(), minlength=vocab).double()
        engine.train()
        set_rng_state(saved)
        totals = D.all_reduce_sum(sums.tolist() + label_counts.tolist(), dev)
        mlm_loss, mlm_c, mlm_n, nsp_loss, nsp_c, nsp_n = totals[:6]
        loss = mlm_loss / max(mlm_n, 1) + (nsp_loss / max(nsp_n, 1) if self.task is not None else 0.0)
        out = {"loss": loss, "mlm_acc": mlm_c / max(mlm_n, 1),
               "mlm_unigram_acc": most_frequent_token_accuracy(totals[6:]), "masked_tokens": int(mlm_n)}
        if self.task is not None:
            out[f"{self.task}_acc"] = nsp_c / max(nsp_n, 1)
        return out

    # ---- checkpoints, the end ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"data": self.source.state_dict()}

    def checkpoint_meta(self, finished: bool) -> dict:
        return {"train_config": self.cfg.to_flat(), "model_config": dataclasses.asdict(self.model_cfg),
                "finished": finished, "extended": self.trainer.plan.extended,
                "tokenizer_dir": str(self.source.tokenizer_dir) if self.source.tokenizer_dir else None}

    def on_finish(self, status: str) -> RunResult:
        """Preempted: the result so far. Finished: the held-out evaluation, the final checkpoint (unless
        --no-final-checkpoint) and the Hugging Face export (--export-hf) of its weights."""
        t, cfg = self.trainer, self.cfg
        if status == "noop":
            return RunResult(step=t.step, status="finished")
        if status == "preempted":
            return RunResult(step=t.step, status="preempted", train=self.result.train, skipped_steps=t.guard.skipped)
        self.source.close()
        self.result.eval = self.evaluate()
        t.write({"step": t.step, "split": "eval", **self.result.eval})
        if cfg.run.final_checkpoint:
            t.save(finished=True)
        self.result.step, self.result.skipped_steps = t.step, t.guard.skipped
        if t.rank == 0:
            _echo(_eval_line(t.step, self.result.eval))
        if cfg.run.export_hf and t.rank == 0:
            from bertforge.training.weights import export_checkpoint

            export_checkpoint(t.ckpt.root / t.ckpt.latest(), self.run_dir / "hf",
                              tokenizer_dir=self.source.tokenizer_dir)
        D.barrier()
        return self.result


def run_spec(cfg: PretrainConfig, world: int) -> RunSpec:
    """The runtime's facts of a pretraining run on `world` ranks (checks that the global batch splits evenly)."""
    cfg.grad_accum(world)
    o, r = cfg.optim, cfg.run
    return RunSpec(parallel=cfg.parallel, seed=cfg.run.seed, global_batch=cfg.batch.global_batch,
                   micro_batch=cfg.batch.micro_batch, total_steps=cfg.total_steps(), warmup_steps=cfg.warmup(),
                   lr=o.lr, max_grad_norm=o.max_grad_norm, state_dir=Path(r.output_dir), optimizer=o.optimizer,
                   betas=o.betas, eps=o.eps, decay=o.decay, decay_power=o.decay_power,
                   keep_last=r.keep_last, log_every=r.log_every, save_every=r.save_every,
                   metrics_dir=Path(r.output_dir), progress=r.progress, progress_desc="pretrain",
                   skip_advice="lower --lr, raise --warmup-steps", report_to=r.report_to,
                   report_params=cfg.to_flat())


def pretrain(cfg: PretrainConfig, explicit: frozenset = frozenset(),
             source_factory: Callable | None = None) -> RunResult:
    """Run (or resume) one pretraining phase on the runtime (bertforge.train.trainer). `explicit`: fields given on
    the command line (a DeepSpeed JSON given by --deepspeed-config may not contradict them)."""
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    D.prepare_env()
    user_ds = ds.load_user_config(cfg.parallel.deepspeed_config) if cfg.parallel.deepspeed_config else None
    if user_ds is not None:
        cfg = ds.merge_user_config(cfg, user_ds, set(explicit), D.world_size(), source=cfg.parallel.deepspeed_config)
    spec = dataclasses.replace(run_spec(cfg, D.world_size()), user_ds=user_ds)
    return Trainer(PretrainingTask(cfg, source_factory, frozenset(explicit)), spec).run()


def _eval_line(step: int, ev: dict) -> str:
    task = "".join(f"{name.upper()} acc {ev[f'{name}_acc']:.4f}, " for name in ("nsp", "sop") if f"{name}_acc" in ev)
    per = "".join(f"; {k[:-len('/mlm_acc')]}: MLM acc {v:.4f}" for k, v in ev.items() if k.endswith("/mlm_acc"))
    return (f"held-out @ step {step}: MLM acc {ev['mlm_acc']:.4f} (unigram baseline {ev['mlm_unigram_acc']:.4f}), "
            f"{task}loss {ev['loss']:.4f}{per}")
