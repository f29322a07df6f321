"""engine.deepspeed.initialize switches DeepSpeed's gradient all-reduce off for one data-parallel rank at ZeRO 0 (an
identity there); the updates must stay bit-equal to the engine with it on, in fp32 and bf16, with accumulation."""
import pytest
import torch

pytest.importorskip("deepspeed")

from engine import deepspeed as ds  # noqa: E402
from engine.training import distributed as D  # noqa: E402


def _train(precision: str, allreduce: bool | None, steps: int = 3, accum: int = 2) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(24, 40), torch.nn.GELU(), torch.nn.Linear(40, 7))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    cfg = ds.build_ds_config(micro_batch=5, global_batch=5 * accum, grad_accum=accum, max_grad_norm=1.0,
                             zero_stage=0, precision=precision)
    engine = ds.initialize(model, opt, cfg)
    if allreduce is not None:
        engine.enable_backward_allreduce = allreduce
    g = torch.Generator().manual_seed(1)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    for _ in range(steps * accum):
        x = torch.randn(5, 24, generator=g).to(dtype)
        loss = engine(x).float().pow(2).mean()
        engine.backward(loss)
        engine.step()
    return [p.detach().float().clone() for p in engine.module.parameters()]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_one_rank_without_allreduce_is_bit_equal(precision):
    D.prepare_env()
    ds.init_distributed(60)
    off = _train(precision, None)
    on = _train(precision, True)
    assert all(torch.equal(a, b) for a, b in zip(off, on))
    before = torch.nn.Sequential(torch.nn.Linear(24, 40), torch.nn.GELU(), torch.nn.Linear(40, 7))
    assert not torch.equal(off[0], before[0].weight.detach())  # it trained


def test_initialize_switches_it_off_only_at_zero0_one_rank():
    D.prepare_env()
    ds.init_distributed(60)
    model = torch.nn.Linear(4, 2)
    cfg0 = ds.build_ds_config(micro_batch=2, global_batch=2, grad_accum=1, max_grad_norm=1.0, zero_stage=0,
                              precision="fp32")
    assert ds.initialize(model, torch.optim.AdamW(model.parameters()), cfg0).enable_backward_allreduce is False
    model = torch.nn.Linear(4, 2)
    cfg1 = dict(cfg0, zero_optimization=dict(cfg0["zero_optimization"], stage=1))
    assert ds.initialize(model, torch.optim.AdamW(model.parameters()), cfg1).enable_backward_allreduce is True
