"""StepGuard (bertforge.train.step) with the SkipGate that parallelize installs: a vetoed step leaves the weights
and the optimizer state untouched, counts are kept in total and in a row, and the in-a-row limit stops training with
a one-line error. One process, no process group (the agreement is then the local flags themselves)."""
import pytest
import torch

from bertforge.errors import TrainingError
from bertforge.parallelize import SkipGate
from bertforge.train.step import StepGuard


class _Engine:
    def was_step_applied(self) -> bool:
        return True


def _setup():
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(layer.parameters(), lr=0.1)
    guard = StepGuard(SkipGate().install(opt), limit=2, fp16=False)
    return layer, opt, guard


def _step(layer, opt, guard, loss_scale: float):
    guard.open()
    loss = layer(torch.ones(1, 3)).sum() * loss_scale
    loss.backward()
    stop = guard.agree(~torch.isfinite(loss.detach()), False, torch.device("cpu"))
    opt.step()
    opt.zero_grad()
    return guard.applied(_Engine()), stop


def test_a_non_finite_step_is_vetoed_and_counted():
    layer, opt, guard = _setup()
    before = layer.weight.detach().clone()
    applied, stop = _step(layer, opt, guard, float("nan"))
    assert not applied and not stop and torch.equal(layer.weight, before) and not opt.state
    guard.count(applied, 1)
    assert (guard.skipped, guard.in_a_row) == (1, 1)
    applied, _ = _step(layer, opt, guard, 1.0)
    assert applied and not torch.equal(layer.weight, before)
    guard.count(applied, 2)
    assert (guard.skipped, guard.in_a_row) == (1, 0)


def test_the_in_a_row_limit_stops_with_one_line():
    layer, opt, guard = _setup()
    guard.count(*_step(layer, opt, guard, float("inf"))[:1], 1)
    with pytest.raises(TrainingError) as info:
        guard.count(_step(layer, opt, guard, float("nan"))[0], 2, who="seed 3 ", detail=lambda: " (last nan)")
    message = str(info.value)
    assert message.startswith("seed 3 stopped at step 2: 2 steps in a row had a non-finite loss (last nan); ")
    assert "--max-skipped-steps" in message and "\n" not in message


def test_fp16_leaves_overflows_to_the_loss_scaler():
    layer, opt, _ = _setup()
    guard = StepGuard(SkipGate().install(opt), limit=2, fp16=True)
    guard.open()
    stop = guard.agree(torch.tensor(True), True, torch.device("cpu"))
    assert stop and not guard.gate.skip
