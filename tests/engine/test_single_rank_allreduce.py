"""bertforge.deepspeed.initialize switches DeepSpeed's gradient all-reduce off for one data-parallel rank at ZeRO 0 (an
identity there); the updates must stay bit-equal to the engine with it on, in fp32 and bf16, with accumulation.
It also clips ZeRO-0 fp32 gradients with torch's foreach clip_grad_norm_ instead of DeepSpeed's per-parameter loop:
the weights stay within fp32 rounding of DeepSpeed's own clipping, with steps that clip and steps that do not.
The checks run in a child process: a process group and the launcher variables must not outlive the test."""
import pytest

from tests.engine._alone import run_main_alone


def _train(precision: str, allreduce: bool | None, steps: int = 3, accum: int = 2, ds_clip: bool = False,
           loss_scale: float = 1.0, sgd: bool = False, max_norm: float = 1.0):
    import torch

    from bertforge import deepspeed as ds

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(24, 40), torch.nn.GELU(), torch.nn.Linear(40, 7))
    start = model[0].weight.detach().clone()
    opt = (torch.optim.SGD(model.parameters(), lr=1e-2) if sgd  # the update shows the clip coefficient directly
           else torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01))
    cfg = ds.build_ds_config(micro_batch=5, global_batch=5 * accum, grad_accum=accum,
                             max_grad_norm=max_norm, zero_stage=0, precision=precision)
    engine = ds.initialize(model, opt, cfg)
    if ds_clip:
        del engine.clip_fp32_gradients  # the instance's foreach clip: DeepSpeed's method again
    if allreduce is not None:
        engine.enable_backward_allreduce = allreduce
    g = torch.Generator().manual_seed(1)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    for _ in range(steps * accum):
        x = torch.randn(5, 24, generator=g).to(dtype)
        loss = engine(x).float().pow(2).mean() * loss_scale
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
    unclipped, _ = _train("fp32", None, sgd=True, loss_scale=100.0, max_norm=0.0)
    for scale in (1.0, 100.0):  # gradient norm ~0.16: untouched; x 100: clipped to 1
        ours, _ = _train("fp32", None, sgd=True, loss_scale=scale)
        theirs, _ = _train("fp32", None, sgd=True, ds_clip=True, loss_scale=scale)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(ours[0], unclipped[0], rtol=1e-3, atol=1e-4), "the clip applied"
    cfg0 = ds.build_ds_config(micro_batch=2, global_batch=2, grad_accum=1, max_grad_norm=1.0, zero_stage=0,
                              precision="fp32")
    model = torch.nn.Linear(4, 2)
    engine0 = ds.initialize(model, torch.optim.AdamW(model.parameters()), cfg0)
    assert engine0.enable_backward_allreduce is False and "clip_fp32_gradients" in vars(engine0)
    cfg1 = dict(cfg0, zero_optimization=dict(cfg0["zero_optimization"], stage=1))
    model = torch.nn.Linear(4, 2)
    assert ds.initialize(model, torch.optim.AdamW(model.parameters()), cfg1).enable_backward_allreduce is True
    print("OK")


def test_one_rank_zero0_skips_the_allreduce_and_clips_with_foreach():
    pytest.importorskip("deepspeed")
    res = run_main_alone("tests.engine.test_single_rank_allreduce")
    assert res.returncode == 0 and "OK" in res.stdout, res.stdout[-2000:] + res.stderr[-4000:]


if __name__ == "__main__":
    main()
