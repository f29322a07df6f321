"""The loop's bookkeeping on a scripted task: warmup + linear decay, best dev state kept and exported, early stop,
mean ± std over seeds."""
import json
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from engine.config.finetune import FinetuneConfig
from engine.finetune.run import run_seeds
from engine.finetune.trainer import train_seed
from engine.training.metrics import MetricsWriter


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Linear(4, 2)

    def forward(self, x, labels=None):
        logits = self.w(x)
        return type("Out", (), {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits})()


@dataclass
class ScriptedTask:
    """Dev scores follow `script`; the test score is the weight norm, so we can tell which state was kept."""
    script: list[float]
    train: list = field(default_factory=lambda: list(range(40)))
    dev: list = field(default_factory=lambda: [0])
    test: list = field(default_factory=lambda: [0])
    metric: str = "accuracy"
    name: str = "toy"
    labels: list = field(default_factory=list)
    calls: int = 0
    norms: list = field(default_factory=list)

    def build_model(self, config):
        return Toy()

    def collate(self, idx, unpadded=False):
        g = torch.Generator().manual_seed(len(idx))
        return {"x": torch.randn(len(idx), 4, generator=g), "labels": torch.zeros(len(idx), dtype=torch.long)}

    def evaluate_split(self, model, split, batch_size=64):
        norm = model.w.weight.norm().item()
        if split == "dev" and self.calls < len(self.script):
            self.calls += 1
            self.norms.append(norm)
            return {"accuracy": self.script[self.calls - 1]}
        return {"accuracy": 0.0, "norm": norm}


def test_best_dev_state_is_kept_and_schedule_is_warmup_then_linear_decay(tmp_path):
    task = ScriptedTask([0.5, 0.9, 0.7, 0.6])
    args = FinetuneConfig(lr=0.1, epochs=4, batch_size=10, seeds=[3], progress=False)
    log = MetricsWriter(tmp_path, enabled=True, tensorboard=False)
    result, model = train_seed(task, None, None, args, 3, None, log, echo=lambda s: None)
    log.close()
    assert result["best_step"] == 8 and result["steps"] == 16
    assert result["test"]["norm"] == pytest.approx(task.norms[1])  # the state of the 2nd evaluation
    lines = map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
    lrs = {r["step"]: r["lr"] for r in lines if "lr" in r}
    warmup = int(0.1 * 16)  # 1 step
    assert lrs[1] == pytest.approx(0.1 * 1 / warmup)
    assert lrs[10] == pytest.approx(0.1 * (1 - (9 - warmup) / (16 - warmup)))


def test_early_stopping():
    task = ScriptedTask([0.5, 0.4, 0.3, 0.9])
    args = FinetuneConfig(lr=0.1, epochs=4, batch_size=10, early_stopping=2, progress=False)
    result, _ = train_seed(task, None, None, args, 1, None, None, echo=lambda s: None)
    assert result["steps"] == 12 and result["best_step"] == 4


def test_seeds_mean_std(tmp_path, monkeypatch):
    scores = iter([0.5, 0.7, 0.9])

    def fake(task, config, init_dir, args, seed, out_dir, log, echo):
        return {"seed": seed, "train_seconds": 1.0, "test": {"f1": next(scores)}}, None

    monkeypatch.setattr("engine.finetune.run.train_seed", fake)

    class T:
        name, metric = "x", "f1"

    from engine.config.model import tiny

    summary = run_seeds(T(), tiny(), None, FinetuneConfig(seeds=[1, 2, 3], progress=False), tmp_path,
                        echo=lambda s: None)
    assert summary["test"]["f1"]["mean"] == pytest.approx(0.7)
    assert summary["test"]["f1"]["std"] == pytest.approx(0.2)
    assert json.loads((tmp_path / "summary.json").read_text())["seeds"] == [1, 2, 3]
