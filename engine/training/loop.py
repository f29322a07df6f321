"""The pretraining loop: MLM + NSP on a DeepSpeed engine.

One optimizer step = `accum` micro batches per rank (micro batch k of the global order on rank k % world), then
engine.step() at the boundary. Non-finite losses (bf16/fp32) skip the whole step on every rank (agreed by an
all-reduce) and are counted; fp16 overflows are DeepSpeed's loss scaler's (it lowers the scale and skips). Too many
skipped steps in a row stop training with an error. SIGTERM is turned into a flag that the ranks agree on at the next
logging, evaluation or save step (one rank: the next step): a checkpoint is saved and the run exits with status 143
(resume with --resume).

Host syncs: one per optimizer step (the non-finite check, after the backward is queued); statistics stay on the
device until a logging step; batches come from a background prefetch thread (prefetch.py)."""
from __future__ import annotations

import dataclasses
import json
import math
import random
import signal
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from engine import deepspeed as ds
from engine.cli import UserError
from engine.config import ConfigError, ModelConfig, preset
from engine.heads import BertForPreTraining
from engine.malloc import pin_mmap_threshold
from engine.optim import build_optimizer, param_groups, warmup_decay
from engine.training import distributed as D
from engine.training.checkpoint import CheckpointManager, rng_state, set_rng_state
from engine.training.config import TrainConfig
from engine.training.device_masking import DeviceMasker
from engine.training.metrics import MetricsWriter, Progress, Throughput, flops_per_token, peak_flops
from engine.training.prefetch import Prefetcher
from engine.training.profile import StepProfiler
from engine.training.weights import load_initial_weights

PREEMPTED = 143  # exit status after a SIGTERM-triggered checkpoint (128 + SIGTERM)


class TrainingError(UserError):
    """Training cannot go on (e.g. too many non-finite steps in a row); the message says why and what to do."""


@dataclass
class RunResult:
    step: int
    status: str  # "finished" or "preempted"
    eval: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    skipped_steps: int = 0


# ---- pieces ----------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def build_model_config(cfg: TrainConfig, vocab_size: int) -> ModelConfig:
    overrides = dict(cfg.model_overrides)
    if "vocab_size" in overrides and overrides["vocab_size"] != vocab_size:
        raise ConfigError(f"model vocab_size {overrides['vocab_size']} does not match the dataset's tokenizer "
                          f"({vocab_size} tokens)")
    overrides["vocab_size"] = vocab_size
    if cfg.dropout is not None:
        overrides.update(hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout)
    overrides.setdefault("kernels", cfg.kernels)
    model_cfg = preset(cfg.preset, **overrides)
    if cfg.seq_len > model_cfg.max_position_embeddings:
        raise ConfigError(f"--seq-len {cfg.seq_len} exceeds max_position_embeddings "
                          f"({model_cfg.max_position_embeddings})")
    return model_cfg


def install_skip_gate(optimizer: torch.optim.Optimizer) -> None:
    """Let the loop veto the next update: DeepSpeed's wrappers (ZeRO 1-3, bf16) all call the client optimizer's
    step(), so a vetoed step leaves weights and moments untouched whatever the stage."""
    inner_step = optimizer.step
    optimizer.bertforge_skip = False

    def step(self, *args, **kwargs):
        if self.bertforge_skip:
            return None
        return inner_step(*args, **kwargs)

    optimizer.step = types.MethodType(step, optimizer)  # a bound method: LR schedulers wrap it again


def model_inputs(batch: dict, unpadded: bool, dev: torch.device, masker: DeviceMasker | None = None) -> dict:
    """The forward's arguments from a collated batch (engine/data/loader.py's keys): padded (B, S) tensors, or the
    unpadded (total,) form + cu_seqlens. With a DeviceMasker (--masking device) the batch is unmasked and is masked
    here, on `dev`, in the layout the model gets."""
    if unpadded:
        inputs = {"input_ids": batch["input_ids_unpad"], "token_type_ids": batch["token_type_ids_unpad"],
                  "position_ids": batch["position_ids_unpad"], "cu_seqlens": batch["cu_seqlens"],
                  "max_seqlen": batch["max_seqlen"], "cls_positions": batch["cls_positions_unpad"]}
    elif batch.get("packed"):
        raise ValueError("packed batches run only in the unpadded layout (--unpadded)")
    else:
        inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    if masker is None:
        inputs["masked_positions"] = batch["masked_positions_unpad" if unpadded else "masked_positions"]
        inputs["mlm_labels"] = batch["mlm_labels"]
    inputs["next_sentence_label"] = batch["next_sentence_label"]
    inputs = {k: (v.to(dev, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    if masker is not None:
        if "mask_seed" not in batch:
            raise ValueError("--masking device needs unmasked batches with a mask_seed (the source masked them "
                             "already)")
        special = batch["special_tokens_mask_unpad" if unpadded else "special_tokens_mask"]
        inputs = masker(inputs, special, int(batch["mask_seed"]))
    return inputs


def batch_tokens(batch: dict) -> int:
    """Real (non-padding) tokens of a collated batch."""
    return int(batch["num_tokens"])


@torch.no_grad()
def evaluate(engine, source, n_batches: int, unpadded: bool, dev: torch.device, vocab_size: int,
             masker: DeviceMasker | None = None) -> dict:
    """Held-out MLM and NSP accuracy (all ranks; same batches each call) and the unigram baseline: the accuracy of
    always predicting the held-out split's most frequent masked token."""
    saved = rng_state()
    engine.eval()
    sums = torch.zeros(6, dtype=torch.float64)  # loss, mlm_correct, mlm_count, nsp_correct, nsp_count, batches
    label_counts = torch.zeros(vocab_size, dtype=torch.float64)
    for batch in source.eval_batches(n_batches):
        inputs = model_inputs(batch, unpadded, dev, masker)
        out = engine(**inputs)
        labels = inputs["mlm_labels"]
        nsp = inputs["next_sentence_label"]
        sums += torch.tensor([float(out.loss), float((out.mlm_predictions == labels).sum()), labels.numel(),
                              float((out.nsp_logits.argmax(-1) == nsp).sum()), nsp.numel(), 1], dtype=torch.float64)
        label_counts += torch.bincount(labels.cpu(), minlength=vocab_size).double()
    engine.train()
    set_rng_state(saved)
    totals = D.all_reduce_sum(sums.tolist() + label_counts.tolist(), dev)
    loss, mlm_c, mlm_n, nsp_c, nsp_n, batches = totals[:6]
    return {"loss": loss / max(batches, 1), "mlm_acc": mlm_c / max(mlm_n, 1), "nsp_acc": nsp_c / max(nsp_n, 1),
            "mlm_unigram_acc": max(totals[6:]) / max(mlm_n, 1), "masked_tokens": int(mlm_n)}


class _Preemption:
    def __init__(self):
        self.flag = False
        self.previous = None

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread
            self.previous = None
        return self

    def _handler(self, signum, frame):
        self.flag = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


# ---- the loop --------------------------------------------------------------------------------------------------
def pretrain(cfg: TrainConfig, explicit: frozenset = frozenset(),
             source_factory: Callable | None = None) -> RunResult:
    """Run (or resume) one pretraining phase. `explicit`: TrainConfig fields given on the command line (they must
    not contradict a DeepSpeed JSON). `source_factory(cfg, rank, world)` -> batch source; default: the prepared
    dataset in cfg.data_dir."""
    pin_mmap_threshold()
    D.prepare_env()
    user_ds = ds.load_user_config(cfg.deepspeed_config) if cfg.deepspeed_config else None
    if user_ds is not None:
        cfg = ds.merge_user_config(cfg, user_ds, set(explicit), D.world_size(), source=cfg.deepspeed_config)
    accum = cfg.grad_accum(D.world_size())
    if cfg.optimizer == "lamb" and cfg.zero_stage > 0:
        raise ConfigError("--optimizer lamb needs --zero-stage 0: ZeRO flattens parameters into partitions, so "
                          "LAMB's per-layer trust ratio would be taken over whole partitions")
    if cfg.precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("--precision fp16 needs a GPU (DeepSpeed has no fp16 on CPU); use bf16 or fp32")
    run_dir = Path(cfg.output_dir)
    ckpt = CheckpointManager(run_dir, cfg.keep_last)
    latest = ckpt.latest()
    if cfg.resume and latest is None:
        raise ConfigError(f"--resume: no complete checkpoint in {ckpt.root}")
    if not cfg.resume and latest is not None:
        raise ConfigError(f"{run_dir} already holds checkpoints; pass --resume to continue it, or another "
                          f"--output-dir")

    if source_factory is None:
        from engine.training.data import open_source as source_factory
    source = source_factory(cfg, D.rank(), D.world_size())
    model_cfg = build_model_config(cfg, source.vocab_size)
    ds.init_distributed(cfg.dist_timeout_s)
    rank, world, dev = D.rank(), D.world_size(), D.device()
    if hasattr(source, "start"):
        source.start()
    source = Prefetcher(source, cfg.prefetch if hasattr(source, "batch_at") else 0)
    masker = None
    if cfg.masking == "device":
        if not hasattr(source, "replacement_probs"):
            raise ConfigError(f"--masking device: the batch source {type(source.source).__name__} does not say "
                              f"which tokens may replace masked ones (no replacement_probs)")
        masker = DeviceMasker(source.mask_token_id, source.replacement_probs, cfg.mlm_probability, model_cfg.kernels,
                              dev)

    seed_everything(cfg.seed)
    model = BertForPreTraining(model_cfg)
    if cfg.init_from and not cfg.resume:
        load_initial_weights(model, cfg.init_from)
    model.to(dev)
    if cfg.compile:
        model.compile(dynamic=True)  # in place: parameter names (checkpoints, export) stay those of the model
    optimizer = build_optimizer(cfg.optimizer, param_groups(model, cfg.weight_decay), cfg.lr, cfg.betas, cfg.eps,
                                fused=False if cfg.optimizer == "adamw" and dev.type == "cpu" else None)
    install_skip_gate(optimizer)
    total = cfg.total_steps()
    scheduler = warmup_decay(optimizer, cfg.warmup(), total, cfg.decay, cfg.decay_power)
    engine = ds.initialize(model, optimizer, ds.build_ds_config(cfg, world, user_ds))
    seed_everything(cfg.seed + 1000 * rank)  # dropout streams differ per rank

    step, skipped, in_a_row = 0, 0, 0
    if cfg.resume:
        state = ckpt.load(engine, latest)
        scheduler.load_state_dict(state["scheduler"])
        source.load_state_dict(state["data"])
        set_rng_state(state["rng"])
        step, skipped, in_a_row = state["step"], state["skipped"], state["in_a_row"]
        D.log0(f"resumed from {ckpt.root / latest} at step {step}")

    metrics = MetricsWriter(run_dir, enabled=rank == 0)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(
            {"train": cfg.to_dict(), "model": dataclasses.asdict(model_cfg), "world_size": world,
             "grad_accum": accum}, indent=2) + "\n", encoding="utf-8")

    def save(finished: bool = False) -> None:
        trainer_state = {"step": step, "scheduler": scheduler.state_dict(), "data": source.state_dict(),
                         "rng": rng_state(), "skipped": skipped, "in_a_row": in_a_row}
        meta = {"train_config": cfg.to_dict(), "model_config": dataclasses.asdict(model_cfg), "finished": finished,
                "tokenizer_dir": str(source.tokenizer_dir) if source.tokenizer_dir else None}
        ckpt.save(engine, step, trainer_state, meta)

    fpt = flops_per_token(model_cfg, cfg.seq_len, cfg.mlm_probability)
    peak = peak_flops()
    progress = Progress(total, step, enabled=cfg.progress and rank == 0)
    throughput = Throughput()
    # The logging window of applied steps, kept where it is produced so that steps between logs read nothing from the
    # device: device sums of loss, mlm_loss, nsp_loss, mlm_correct, nsp_correct; host counts of masked tokens, NSP
    # labels and micro batches. Tokens and samples of all steps since the last collective, for the throughput.
    win_dev = torch.zeros(5, dtype=torch.float64, device=dev)
    win_host = [0, 0, 0]
    pending = [0, 0]
    result = RunResult(step=step, status="finished")
    fp16 = cfg.precision == "fp16"
    t_start = time.perf_counter()
    log_clock = (t_start, source.wait_s)  # data_wait_frac: share of wall time blocked on the loader since last log
    profiler = StepProfiler(run_dir, cfg.profile_start if cfg.profile_start >= 0 else cfg.log_every,
                            cfg.profile_steps, enabled=rank == 0)
    with _Preemption() as preempt:
        while step < total:
            profiler.before_step(step)
            optimizer.bertforge_skip = False
            dev_sums = torch.zeros(5, dtype=torch.float64, device=dev)  # this step's share of win_dev
            mlm_n = nsp_n = 0
            nonfinite = torch.zeros((), dtype=torch.bool, device=dev)
            lr = optimizer.param_groups[0]["lr"]
            norm = None
            logging = (step + 1) % cfg.log_every == 0 or step + 1 == total  # this step ends with a metrics line
            for micro_step in range(accum):
                batch = source.next_batch()
                pending[0] += batch_tokens(batch)
                pending[1] += int(batch["next_sentence_label"].numel())
                inputs = model_inputs(batch, cfg.unpadded, dev, masker)
                out = engine(**inputs)
                nonfinite |= ~torch.isfinite(out.loss.detach())
                engine.backward(out.loss)  # NaN grads are harmless: the update is vetoed below
                if micro_step == accum - 1:
                    if logging:
                        norm = ds.grad_norm_before_step(engine)
                    if not fp16:  # fp16: DeepSpeed's loss scaler skips and lowers the scale
                        # the one host sync of a step (after the backward is queued): all ranks skip together
                        optimizer.bertforge_skip = D.all_reduce_max([float(nonfinite)], dev)[0] > 0
                engine.step()
                labels, nsp = inputs["mlm_labels"], inputs["next_sentence_label"]
                dev_sums += torch.stack([
                    out.loss.detach(), out.mlm_loss.detach(), out.nsp_loss.detach(),
                    (out.mlm_predictions == labels).sum(), (out.nsp_logits.argmax(-1) == nsp).sum()]).double()
                mlm_n += labels.numel()
                nsp_n += nsp.numel()
            step += 1
            profiled = profiler.after_step(step)
            if profiled:
                idle = profiled["device_idle_frac"]
                (progress.write if progress.bar is not None else D.log0)(
                    f"profile of steps {step - profiled['steps'] + 1}-{step}: {profiled['step_s']:.4f} s/step"
                    + (f", device idle {idle:.1%}" if idle is not None else "") + f" ({run_dir}/profile.json)")
            applied = not optimizer.bertforge_skip and (not fp16 or engine.was_step_applied())
            if applied:
                scheduler.step()
                in_a_row = 0
                win_dev += dev_sums
                win_host = [win_host[0] + mlm_n, win_host[1] + nsp_n, win_host[2] + accum]
            else:
                skipped += 1
                in_a_row += 1
            if in_a_row >= cfg.max_skipped_steps:
                source.close()
                metrics.close()
                progress.close()
                raise TrainingError(f"stopped at step {step}: {in_a_row} steps in a row had a non-finite loss "
                                    f"(last {dev_sums[0].item() / accum}); lower --lr, raise --warmup-steps or "
                                    f"use --precision fp32 (limit: --max-skipped-steps)")
            evaluating = bool(cfg.eval_every) and step % cfg.eval_every == 0 and step < total
            saving = bool(cfg.save_every) and step % cfg.save_every == 0 and step < total
            progress.update(1)
            # Collectives only where a decision needs them; the SIGTERM flag is agreed on there too (one rank: every
            # step, for free), so a preempted multi-rank job stops at its next logging, evaluation or save step.
            stop = preempt.flag if world == 1 else False
            if logging or evaluating or saving:
                reduced = D.all_reduce_sum([*pending, float(preempt.flag)], dev)
                throughput.add(int(reduced[0]), int(reduced[1]))
                pending = [0, 0]
                stop = reduced[2] > 0
            if logging:
                # w: loss, mlm_loss, nsp_loss, mlm_correct, nsp_correct, mlm_count, nsp_count, micro batches
                w = D.all_reduce_sum(win_dev.tolist() + win_host, dev)
                n = max(w[7], 1)
                now = time.perf_counter()
                tok_s, samp_s = throughput.rates()
                record = {"step": step, "split": "train", "loss": w[0] / n, "mlm_loss": w[1] / n, "nsp_loss": w[2] / n,
                          "mlm_acc": w[3] / max(w[5], 1), "nsp_acc": w[4] / max(w[6], 1),
                          "lr": lr, "grad_norm": norm if norm is not None else ds.grad_norm(engine),
                          "loss_scale": ds.loss_scale(engine), "tokens_per_s": tok_s, "samples_per_s": samp_s,
                          "mfu": tok_s * fpt / (peak * world) if peak else None, "skipped_steps": skipped,
                          "data_wait_frac": (source.wait_s - log_clock[1]) / max(now - log_clock[0], 1e-9),
                          "time": now - t_start}
                log_clock = (now, source.wait_s)
                if w[7] > 0:
                    metrics.write(record)
                    result.train = record
                    progress.postfix(loss=record["loss"], mlm_acc=record["mlm_acc"], nsp_acc=record["nsp_acc"],
                                     tok_s=f"{tok_s:.0f}")
                win_dev.zero_()
                win_host = [0, 0, 0]
            if evaluating:
                ev = evaluate(engine, source, cfg.eval_batches, cfg.unpadded, dev, model_cfg.vocab_size, masker)
                metrics.write({"step": step, "split": "eval", **ev})
                progress.write(_eval_line(step, ev))
            if stop:
                save()
                source.close()
                progress.close()
                metrics.close()
                D.log0(f"SIGTERM: checkpoint saved at step {step} in {ckpt.root}; continue with --resume")
                return RunResult(step=step, status="preempted", train=result.train, skipped_steps=skipped)
            if saving:
                save()
    progress.close()
    source.close()
    result.eval = evaluate(engine, source, cfg.eval_batches, cfg.unpadded, dev, model_cfg.vocab_size, masker)
    metrics.write({"step": step, "split": "eval", **result.eval})
    save(finished=True)
    metrics.close()
    result.step, result.skipped_steps = step, skipped
    if rank == 0:
        print(_eval_line(step, result.eval), flush=True)
    if cfg.export_hf and rank == 0:
        from engine.training.weights import export_checkpoint

        export_checkpoint(ckpt.root / ckpt.latest(), run_dir / "hf", tokenizer_dir=source.tokenizer_dir)
    D.barrier()
    return result


def _eval_line(step: int, ev: dict) -> str:
    return (f"held-out @ step {step}: MLM acc {ev['mlm_acc']:.4f} (unigram baseline {ev['mlm_unigram_acc']:.4f}), "
            f"NSP acc {ev['nsp_acc']:.4f}, loss {ev['loss']:.4f}")
