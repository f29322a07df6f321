"""bf16 at ZeRO 0 runs DeepSpeed's FP16_UnfusedOptimizer, which steps the client optimizer once on zero gradients
when it is built; bertforge.deepspeed.initialize undoes that step (`undo_unfused_init_step`), so AdamW's bias
correction and weight decay start at the first real update, as at ZeRO 1. Checked against ZeRO 1 on the same model
and batches (and, to show the check can fail, DeepSpeed's engine without the undo). Runs in a child process: a
process group and the launcher variables must not outlive the test."""
import pytest

from tests.engine._alone import run_main_alone


def _train(stage: int, undo: bool = True, steps: int = 3):
    import torch

    from bertforge import deepspeed as ds

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(24, 40), torch.nn.LayerNorm(40), torch.nn.Linear(40, 7))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, eps=1e-6, weight_decay=0.01)
    cfg = ds.build_ds_config(micro_batch=5, global_batch=5, grad_accum=1, max_grad_norm=1.0, zero_stage=stage,
                             precision="bf16")
    if undo:
        engine = ds.initialize(model, opt, cfg)
    else:  # DeepSpeed's own engine, as ds.initialize builds it, without the undo
        engine, *_ = ds._ds().initialize(model=model, optimizer=opt, config=cfg, dist_init_required=False)
    if stage == 0 and undo:
        inner = engine.optimizer
        assert type(inner).__name__ == "FP16_UnfusedOptimizer" and len(inner.optimizer.state) == 0
        for masters, params in zip(inner.fp32_groups, inner.fp16_groups):
            assert all(torch.equal(m, p.float()) for m, p in zip(masters, params))
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(5, 24, generator=g).bfloat16()
        loss = engine(x).float().pow(2).mean()
        engine.backward(loss)
        engine.step()
    return [p.detach().float().clone() for p in engine.module.parameters()]


def main() -> None:
    import torch

    from bertforge import deepspeed as ds
    from bertforge import distributed as D

    D.prepare_env()
    ds.init_distributed(60)
    zero1, zero0, raw0 = _train(1), _train(0), _train(0, undo=False)
    diff = max((a - b).abs().max().item() for a, b in zip(zero0, zero1))
    raw = max((a - b).abs().max().item() for a, b in zip(raw0, zero1))
    assert diff <= 1e-6, f"ZeRO 0 vs ZeRO 1 after the undo: {diff:.3g}"  # measured 0 (same fp32 update)
    assert raw > 1e-3, f"without the undo ZeRO 0 should lag ZeRO 1 (lr 1e-2): {raw:.3g}"
    print("OK", diff, raw)


def test_zero0_bf16_updates_equal_zero1_after_the_undo():
    pytest.importorskip("deepspeed")
    res = run_main_alone("tests.engine.test_unfused_init_step")
    assert res.returncode == 0 and "OK" in res.stdout, res.stdout[-2000:] + res.stderr[-4000:]


if __name__ == "__main__":
    main()
