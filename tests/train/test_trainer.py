"""The one training runtime (bertforge.train.trainer.Trainer) driving a third, tiny task (least squares on a
linear layer, no dropout): a run resumed from its mid-run checkpoint continues with the uninterrupted run's exact
losses and writes each metrics line once, a non-finite step is skipped (weights untouched) and counted, too many in a
row stop with the in-a-row error, and a SIGTERM checkpoints after the agreed step and reports 'preempted'. One
process, on the real DeepSpeed engine (CPU)."""
from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from bertforge.config.parallel import ParallelConfig
from bertforge.errors import TrainingError
from bertforge.train.trainer import ResumePoint, RunSpec, Trainer, TrainTask


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((self.lin(x).squeeze(-1) - y) ** 2).mean()


@dataclass
class _Window:
    loss: float = 0.0
    steps: int = 0

    def add(self, other: "_Window") -> None:
        self.loss += other.loss
        self.steps += other.steps


class _Task(TrainTask):
    """Micro batch k of step s is drawn from seed (s, k): the same data on any resume."""

    def __init__(self, resume: bool = False, nan_steps=(), sigterm_step: int | None = None):
        self.resume, self.nan_steps, self.sigterm_step = resume, set(nan_steps), sigterm_step
        self.losses: dict[int, float] = {}  # step (1-based) -> summed micro-batch losses
        self.weights: dict[int, torch.Tensor] = {}

    def setup(self, trainer):
        self.trainer = trainer

    def resume_point(self):
        tag = self.trainer.ckpt.latest() if self.resume else None
        return ResumePoint(self.trainer.ckpt, tag) if tag else None

    def build_model(self, resuming):
        return _Model()

    def param_groups(self, model):
        return [{"params": list(model.parameters()), "weight_decay": 0.0}]

    def restore(self, state, point):
        assert state["toy"] == self.trainer.step

    def micro_batches(self, step):
        out = []
        for k in range(self.trainer.accum):
            g = torch.Generator().manual_seed(100 * step + k)
            x = torch.randn(2, 4, generator=g)
            out.append({"x": x, "y": x.sum(-1) + 0.5})
        return out

    def forward(self, engine, inputs, num_items, scale):
        step = self.trainer.step
        if step == self.sigterm_step:
            os.kill(os.getpid(), signal.SIGTERM)
        loss = engine(**inputs)
        return (loss * float("nan") if step in self.nan_steps else loss), None

    def new_window(self):
        return _Window()

    def add_micro(self, stats, inputs, out, loss):
        stats.loss += float(loss.detach())
        stats.steps = 1
        self.losses[self.trainer.step + 1] = self.losses.get(self.trainer.step + 1, 0.0) + float(loss.detach())

    def after_step(self):
        self.weights[self.trainer.step] = self.trainer.engine.module.lin.weight.detach().clone()

    def log_record(self, window, lr, norm):
        return {"step": self.trainer.step, "loss": window.loss / window.steps} if window.steps else None

    def state_dict(self):
        return {"toy": self.trainer.step}

    def checkpoint_meta(self, finished):
        return {"finished": finished}

    def on_finish(self, status):
        return status


def _spec(tmp_path, **kw) -> RunSpec:
    base = dict(parallel=ParallelConfig(max_skipped_steps=2), seed=3, global_batch=4, micro_batch=2, total_steps=6,
                warmup_steps=1, lr=0.05, max_grad_norm=1.0, state_dir=tmp_path, log_every=1, save_every=3,
                metrics_dir=tmp_path, progress=False)
    return RunSpec(**{**base, **kw})


def _run(task, spec):
    return Trainer(task, spec, echo=lambda s: None).run()


def test_a_resumed_run_continues_with_the_same_losses(tmp_path):
    full = _Task()
    assert _run(full, _spec(tmp_path / "a")) == "finished" and sorted(full.losses) == [1, 2, 3, 4, 5, 6]
    _run(_Task(), _spec(tmp_path / "b", total_steps=6))
    resumed = _Task(resume=True)
    (tmp_path / "b" / "metrics.jsonl").write_text(
        (tmp_path / "b" / "metrics.jsonl").read_text() + json.dumps({"step": 5, "loss": 0.0}) + "\n")
    assert _run(resumed, _spec(tmp_path / "b")) == "finished"
    assert sorted(resumed.losses) == [4, 5, 6]
    assert all(resumed.losses[s] == full.losses[s] for s in (4, 5, 6))  # bit-equal: fp32, no dropout
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # the lines after the checkpoint cut, each step once


def test_a_non_finite_step_is_skipped_and_too_many_in_a_row_stop(tmp_path):
    task = _Task(nan_steps={1})  # the second step
    trainer = Trainer(task, _spec(tmp_path / "a"), echo=lambda s: None)
    trainer.run()
    assert trainer.guard.skipped == 1 and torch.equal(task.weights[1], task.weights[2])
    assert not torch.equal(task.weights[2], task.weights[3])
    with pytest.raises(TrainingError, match="stopped at step 3: 2 steps in a row"):
        _run(_Task(nan_steps={1, 2}), _spec(tmp_path / "b"))


def test_sigterm_checkpoints_after_the_agreed_step(tmp_path):
    trainer = Trainer(_Task(sigterm_step=1), _spec(tmp_path, save_every=0), echo=lambda s: None)
    assert trainer.run() == "preempted" and trainer.step == 2
    assert trainer.ckpt.latest() == "step_00000002"
