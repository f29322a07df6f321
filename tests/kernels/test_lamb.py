"""kernels/lamb.py: the foreach reference against a per-tensor transcription of the paper's Algorithm 2, and the fused
multi-tensor Triton step against the reference (several steps, odd sizes, zero tensors, clamping, bf16 grads)."""
import pytest
import torch

from tests.kernels._kernel_tolerance import assert_within_noise
from bertforge.kernels.lamb import fused_lamb_step
from bertforge.kernels.reference import lamb_step_ref

SIZES = [(7,), (3, 129), (1,), (40000,), (0,), (17, 5)]


def _paper_lamb(p, g, m, v, *, lr, beta1, beta2, eps, weight_decay, step, bias_correction=True, max_trust_ratio=10.0):
    """You et al. 2019, Algorithm 2, one tensor at a time."""
    for x, gr, mm, vv in zip(p, g, m, v):
        gr = gr.to(x.dtype)
        mm.mul_(beta1).add_((1 - beta1) * gr)
        vv.mul_(beta2).add_((1 - beta2) * gr * gr)
        mh = mm / (1 - beta1 ** step) if bias_correction else mm
        vh = vv / (1 - beta2 ** step) if bias_correction else vv
        u = mh / (vh.sqrt() + eps) + weight_decay * x
        wn, un = x.norm(), u.norm()
        ratio = (wn / un).item() if wn > 0 and un > 0 else 1.0
        if max_trust_ratio is not None:
            ratio = min(ratio, max_trust_ratio)
        x.sub_(lr * ratio * u)


def _state(seed, dtype=torch.float32, gdtype=None, zero_param=True):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) * 0.1 for s in SIZES]
    if zero_param:
        params[2].zero_()  # ||x|| = 0: ratio 1
    grads = [torch.randn(s, generator=g, dtype=torch.float64).to(gdtype or dtype) for s in SIZES]
    return params, grads, [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]


HP = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.01)


def _steps(fn, state, n_steps, **kw):
    params, grads, m, v = [[t.clone() for t in lst] for lst in state]
    for step in range(1, n_steps + 1):
        fn(params, grads, m, v, step=step, **{**HP, **kw})
    return params, m, v


@pytest.mark.parametrize("kw", [{}, dict(bias_correction=False), dict(max_trust_ratio=None),
                                dict(weight_decay=0.0), dict(max_trust_ratio=0.5)])
def test_reference_matches_paper(kw):
    state = _state(0, torch.float64)
    for a, b in zip(_steps(lamb_step_ref, state, 3, **kw), _steps(_paper_lamb, state, 3, **kw)):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kw", [{}, dict(bias_correction=False), dict(max_trust_ratio=None),
                                dict(max_trust_ratio=0.5, weight_decay=0.0)])
def test_fused_matches_reference(kw):
    state = _state(1)
    grads_before = [g.clone() for g in state[1]]
    fused = _steps(fused_lamb_step, state, 3, **kw)
    lowp = _steps(lamb_step_ref, state, 3, **kw)
    exact = _steps(lamb_step_ref, [[t.double() for t in lst] for lst in state], 3, **kw)
    for name, f, lo, ex in zip(("param", "exp_avg", "exp_avg_sq"), fused, lowp, exact):
        for i, (a, b, c) in enumerate(zip(f, lo, ex)):
            assert a.dtype == torch.float32
            assert_within_noise(a, b, c, factor=4.0, name=f"{name}[{i}] {kw}")  # 3 chained steps
    assert all(torch.equal(g, h) for g, h in zip(state[1], grads_before))


def test_fused_bf16_grads_and_in_place():
    state = _state(2, gdtype=torch.bfloat16)
    params, grads, m, v = [[t.clone() for t in lst] for lst in state]
    ptrs = [p.data_ptr() for p in params]
    fused_lamb_step(params, grads, m, v, step=1, **HP)
    assert [p.data_ptr() for p in params] == ptrs
    ref = [[t.clone() for t in lst] for lst in state]
    lamb_step_ref(ref[0], ref[1], ref[2], ref[3], step=1, **HP)
    for a, b in zip(params + m + v, ref[0] + ref[2] + ref[3]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    # the zero tensor takes the unscaled step (ratio 1): x = -lr * m_hat / (sqrt(v_hat) + eps) ~ -lr * sign(g)
    torch.testing.assert_close(params[2], -HP["lr"] * grads[2].float().sign(), rtol=1e-4, atol=0)
