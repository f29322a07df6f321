"""The loop's bookkeeping on a scripted task, through the DeepSpeed engine: warmup + linear decay, best dev state kept
(checkpointed) and restored, early stop, mean ± std over seeds, the balanced class weights."""
import json
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from torch import nn

from bertforge.config.finetune import FinetuneConfig
from bertforge.config.model import tiny
from bertforge.finetuning.run import run_seeds
from bertforge.finetuning.trainer import train_seed
from bertforge.train.metrics import MetricsWriter


class Toy(nn.Module):
    def __init__(self, config=None):
        super().__init__()
        self.config = config
        self.w = nn.Linear(4, 2)

    def forward(self, x):
        return type("Out", (), {"logits": self.w(x)})()


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
        return Toy(config)

    def collate(self, idx, unpadded=False, seed=None):
        g = torch.Generator().manual_seed(len(idx) + (seed[1] if seed else 0))
        return {"x": torch.randn(len(idx), 4, generator=g), "labels": torch.zeros(len(idx), dtype=torch.long)}

    def loss(self, model, batch):
        return nn.functional.cross_entropy(model(x=batch["x"]).logits.float(), batch["labels"])

    def outputs(self, model, batch):
        norm = getattr(model, "module", model).w.weight.norm().item()
        return [norm] * len(batch["x"])

    def metrics(self, split, outputs):
        norm = outputs[0]
        if split == "dev" and self.calls < len(self.script):
            self.calls += 1
            self.norms.append(norm)
            return {"accuracy": self.script[self.calls - 1]}
        return {"accuracy": 0.0, "norm": norm}

    def majority(self):
        return None

    def info(self):
        return {"task": self.name}


def test_best_dev_state_is_kept_and_schedule_is_warmup_then_linear_decay(tmp_path):
    task = ScriptedTask([0.5, 0.9, 0.7, 0.6])
    args = FinetuneConfig(lr=0.1, epochs=4, global_batch=10, seeds=[3], progress=False, log_every=1)
    log = MetricsWriter(tmp_path, enabled=True, report_to=("jsonl",))
    result, model = train_seed(task, tiny(), None, args, 3, None, log, echo=lambda s: None)
    log.close()
    assert result["best_step"] == 8 and result["steps"] == 16
    assert result["test"]["norm"] == pytest.approx(task.norms[1])  # the state of the 2nd evaluation
    assert model.w.weight.norm().item() == pytest.approx(task.norms[1])  # and the returned (exported) model's
    lines = list(map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()))
    lrs = {r["step"]: r["lr"] for r in lines if "lr" in r}
    warmup = int(0.1 * 16)  # 1 step
    assert lrs[1] == pytest.approx(0.1 * 1 / warmup)
    assert lrs[10] == pytest.approx(0.1 * (1 - (9 - warmup) / (16 - warmup)))
    assert [r["step"] for r in lines if r.get("split") == "dev" and not r.get("final")] == [4, 8, 12, 16]


def test_early_stopping():
    task = ScriptedTask([0.5, 0.4, 0.3, 0.9])
    args = FinetuneConfig(lr=0.1, epochs=4, global_batch=10, early_stopping=2, progress=False)
    result, _ = train_seed(task, tiny(), None, args, 1, None, None, echo=lambda s: None)
    assert result["steps"] == 12 and result["best_step"] == 4


def test_seeds_mean_std(tmp_path, monkeypatch):
    scores = iter([0.5, 0.7, 0.9])

    def fake(task, config, init_dir, args, seed, out_dir, log, echo, **kw):
        return {"seed": seed, "train_seconds": 1.0, "test": {"f1": next(scores)}, "status": "finished"}, None

    monkeypatch.setattr("bertforge.finetuning.run.train_seed", fake)

    class T:
        name, metric = "x", "f1"

    summary = run_seeds(T(), tiny(), None, FinetuneConfig(seeds=[1, 2, 3], progress=False), tmp_path,
                        echo=lambda s: None)
    assert summary["test"]["f1"]["mean"] == pytest.approx(0.7)
    assert summary["test"]["f1"]["std"] == pytest.approx(0.2)
    assert json.loads((tmp_path / "summary.json").read_text())["seeds"] == [1, 2, 3]


def test_balanced_class_weights_and_weighted_loss():
    """--class-weight balanced: w_c = n / (classes x n_c) (scikit-learn's 'balanced'); the loss is
    sum_i w[y_i] nll_i / sum_i w[y_i]."""
    from bertforge.finetuning.tasks import ClassifyTask, balanced_weights

    labels = [0, 0, 0, 0, 0, 0, 1, 1, 2]
    w = balanced_weights(labels, 4)
    assert w == pytest.approx([9 / (3 * 6), 9 / (3 * 2), 9 / (3 * 1), 0.0])  # class 3 never occurs
    sk = pytest.importorskip("sklearn.utils.class_weight")
    assert w[:3] == pytest.approx(sk.compute_class_weight("balanced", classes=np.array([0, 1, 2]), y=np.array(labels)).tolist())

    logits = torch.tensor([[2.0, 0.1, -1.0, 0.0], [0.3, 0.2, 0.1, 0.0], [-0.5, 1.5, 0.0, 0.0]])
    y = torch.tensor([0, 2, 1])

    class Fixed(nn.Module):
        def forward(self, **inputs):
            return type("Out", (), {"logits": logits})()

    task = ClassifyTask(["a", "b", "c", "d"], 8, class_weights=w)
    nll = -logits.log_softmax(-1)[torch.arange(3), y]
    expected = sum(w[t] * nll[i] for i, t in enumerate(y.tolist())) / sum(w[t] for t in y.tolist())
    got = task.loss(Fixed(), {"input_ids": torch.zeros(3, 2, dtype=torch.long), "labels": y})
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    plain = ClassifyTask(["a", "b", "c", "d"], 8).loss(Fixed(), {"input_ids": None, "labels": y})
    assert plain.item() == pytest.approx(nll.mean().item(), rel=1e-6)
    assert got.item() != pytest.approx(plain.item(), rel=1e-3)
