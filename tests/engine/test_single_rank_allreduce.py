"""bertforge.deepspeed.initialize switches DeepSpeed's gradient all-reduce off for one data-parallel rank at ZeRO 0 (an
identity there); the updates must stay bit-equal to the engine with it on, in fp32 and bf16, with accumulation.
The checks run in a child process: a process group and the launcher variables must not outlive the test."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _train(precision: str, allreduce: bool | None, steps: int = 3, accum: int = 2):
    import torch

    from bertforge import deepspeed as ds

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(24, 40), torch.nn.GELU(), torch.nn.Linear(40, 7))
    start = model[0].weight.detach().clone()
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
    return [p.detach().float().clone() for p in engine.module.parameters()], start


def main() -> None:
    import torch

    from bertforge import deepspeed as ds
    from bertforge import distributed as D

    D.prepare_env()
    ds.init_distributed(60)
    for precision in ("fp32", "bf16"):
        (off, start), (on, _) = _train(precision, None), _train(precision, True)
        assert all(torch.equal(a, b) for a, b in zip(off, on)), precision
        assert not torch.equal(off[0], start.float()), "it trained"
    cfg0 = ds.build_ds_config(micro_batch=2, global_batch=2, grad_accum=1, max_grad_norm=1.0, zero_stage=0,
                              precision="fp32")
    model = torch.nn.Linear(4, 2)
    assert ds.initialize(model, torch.optim.AdamW(model.parameters()), cfg0).enable_backward_allreduce is False
    cfg1 = dict(cfg0, zero_optimization=dict(cfg0["zero_optimization"], stage=1))
    model = torch.nn.Linear(4, 2)
    assert ds.initialize(model, torch.optim.AdamW(model.parameters()), cfg1).enable_backward_allreduce is True
    print("OK")


def test_one_rank_zero0_skips_the_allreduce_and_stays_bit_equal():
    pytest.importorskip("deepspeed")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["PYTHONPATH"] = str(ROOT)
    res = subprocess.run([sys.executable, "-c", "from tests.engine.test_single_rank_allreduce import main; main()"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "OK" in res.stdout, res.stdout[-2000:] + res.stderr[-4000:]


if __name__ == "__main__":
    main()
