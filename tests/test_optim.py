"""engine/optim: Lamb end to end against an independent per-tensor loop written from the paper (You et al. 2019,
Algorithm 2), Lamb on flat ZeRO-like partitions (ranks simulated by threads) against per-parameter Lamb, the no-decay
parameter groups, and the warmup/decay schedule."""
from __future__ import annotations

import math
import threading

import pytest
import torch
from torch import nn

from bertforge.optim import FlatPieces, Lamb, build_optimizer, param_groups, warmup_decay


def lamb_reference(params, grads_per_step, lr, betas, eps, weight_decay, max_trust_ratio):
    """Straightforward LAMB in float64, one tensor at a time: returns the parameters after every step."""
    b1, b2 = betas
    xs = [p.detach().double().clone() for p in params]
    ms = [torch.zeros_like(x) for x in xs]
    vs = [torch.zeros_like(x) for x in xs]
    history = []
    for t, grads in enumerate(grads_per_step, start=1):
        for i, (x, g) in enumerate(zip(xs, grads)):
            g = g.double()
            ms[i] = b1 * ms[i] + (1 - b1) * g
            vs[i] = b2 * vs[i] + (1 - b2) * g * g
            m_hat = ms[i] / (1 - b1 ** t)
            v_hat = vs[i] / (1 - b2 ** t)
            r = m_hat / (v_hat.sqrt() + eps)
            u = r + weight_decay[i] * x
            x_norm, u_norm = x.norm().item(), u.norm().item()
            ratio = x_norm / u_norm if x_norm > 0 and u_norm > 0 else 1.0
            if max_trust_ratio is not None:
                ratio = min(ratio, max_trust_ratio)
            xs[i] = x - lr * ratio * u
        history.append([x.clone() for x in xs])
    return history


@pytest.mark.parametrize("max_trust_ratio", [10.0, None, 0.5])
def test_lamb_matches_paper_loop(max_trust_ratio):
    g = torch.Generator().manual_seed(0)
    shapes = [(7, 13), (13,), (1,), (3, 5, 2), (31,)]
    params = [nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    with torch.no_grad():
        params[2].zero_()  # ||x|| = 0: trust ratio 1
    wd = [0.01, 0.0, 0.01, 0.1, 0.0]
    groups = [{"params": [params[0], params[2]], "weight_decay": 0.01}, {"params": [params[1], params[4]],
              "weight_decay": 0.0}, {"params": [params[3]], "weight_decay": 0.1}]
    opt = Lamb(groups, lr=0.01, betas=(0.9, 0.999), eps=1e-6, max_trust_ratio=max_trust_ratio, use_fused=False)
    grads_per_step = [[torch.randn(s, generator=g) * 10 ** k for k, s in enumerate(shapes)] for _ in range(5)]
    expected = lamb_reference(params, grads_per_step, 0.01, (0.9, 0.999), 1e-6, wd, max_trust_ratio)
    for step, grads in enumerate(grads_per_step):
        for p, grad in zip(params, grads):
            p.grad = grad.clone()
        opt.step()
        for p, ref in zip(params, expected[step]):
            torch.testing.assert_close(p.detach().double(), ref, atol=1e-6, rtol=1e-5)


def test_lamb_skips_params_without_grad_and_trains():
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    frozen = nn.Parameter(torch.ones(3))
    opt = Lamb(param_groups(model, 0.01) + [{"params": [frozen], "weight_decay": 0.0}], lr=0.05, use_fused=False)
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    y = x.sum(1, keepdim=True)
    first = None
    for _ in range(60):
        loss = nn.functional.mse_loss(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first
    assert torch.equal(frozen.detach(), torch.ones(3))
    sd = opt.state_dict()
    opt2 = Lamb(param_groups(model, 0.01) + [{"params": [frozen], "weight_decay": 0.0}], lr=0.05, use_fused=False)
    opt2.load_state_dict(sd)
    assert opt2.state_dict()["state"].keys() == sd["state"].keys()


def test_param_groups_never_decay_bias_or_layernorm():
    from bertforge.config import tiny
    from bertforge.heads import BertForPreTraining

    model = BertForPreTraining(tiny(vocab_size=101))
    decay, no_decay = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.01
    assert all(names[id(p)].endswith(("bias", "LayerNorm.weight")) for p in no_decay["params"])
    assert not any(names[id(p)].endswith(("bias", "LayerNorm.weight")) for p in decay["params"])
    total = len(decay["params"]) + len(no_decay["params"])
    assert total == len({id(p) for p in model.parameters()})  # the tied decoder weight appears once


def test_build_optimizer_names():
    p = [nn.Parameter(torch.zeros(2))]
    assert isinstance(build_optimizer("lamb", [{"params": p}], 1e-3), Lamb)
    assert isinstance(build_optimizer("adamw", [{"params": p}], 1e-3), torch.optim.AdamW)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer("sgd", [{"params": p}], 1e-3)


@pytest.mark.parametrize("decay", ["linear", "poly", "cosine", "constant"])
def test_warmup_decay_shape(decay):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_decay(opt, warmup_steps=4, total_steps=20, decay=decay, power=2.0)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    progress = 12 / 16
    expected = {"linear": 1 - progress, "poly": (1 - progress) ** 2, "cosine": 0.5 * (1 + math.cos(math.pi * progress)),
                "constant": 1.0}[decay]
    assert lrs[16] == pytest.approx(expected)


class ThreadAllReduce:
    """An all-reduce (sum) over `n` threads that stand for ranks: each rank's tensor is summed in rank order."""

    def __init__(self, n: int):
        self.slots = [None] * n
        self.barrier = threading.Barrier(n)

    def for_rank(self, rank: int):
        def reduce(t: torch.Tensor) -> None:
            self.slots[rank] = t.clone()
            self.barrier.wait()
            t.copy_(sum(self.slots[1:], self.slots[0]))
            self.barrier.wait()
        return reduce


def _zero_layout(shapes, world, align):
    """ZeRO-1/2-like flat layout of one group: parameters one after another, each padded to `align` elements, the
    whole padded to a multiple of `world`; rank r holds [r P, (r + 1) P). Returns (offsets, P, per-rank FlatPieces)."""
    offsets, at = [], 0
    for s in shapes:
        offsets.append(at)
        at += math.prod(s) + (-math.prod(s)) % align
    size = -(-at // world)
    ranks = []
    for r in range(world):
        lo, hi = r * size, (r + 1) * size
        starts, numels, ids = [], [], []
        for j, (off, s) in enumerate(zip(offsets, shapes)):
            a, b = max(lo, off), min(hi, off + math.prod(s))
            if a < b:
                starts.append(a - lo), numels.append(b - a), ids.append(j)
        ranks.append(FlatPieces(tuple(starts), tuple(numels), tuple(ids), len(shapes)))
    return offsets, size, ranks


def _flatten(tensors, offsets, total):
    flat = torch.zeros(total)
    for t, off in zip(tensors, offsets):
        flat[off:off + t.numel()] = t.reshape(-1)
    return flat


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("max_trust_ratio", [10.0, None])
def test_lamb_on_flat_partitions_matches_per_parameter_lamb(world, max_trust_ratio):
    """Each rank (a thread) steps its flat partitions of two parameter groups, parameters split across ranks and
    padded between: after every step the parameters gathered from the partitions equal per-parameter Lamb."""
    g = torch.Generator().manual_seed(3)
    groups = [([(7, 13), (1,), (3, 5, 2), (31,)], 0.01), ([(13,), (5,), (29,)], 0.0)]
    params = [[nn.Parameter(torch.randn(s, generator=g)) for s in shapes] for shapes, _ in groups]
    with torch.no_grad():
        params[0][1].zero_()  # ||x|| = 0: trust ratio 1
    hyper = dict(lr=0.02, betas=(0.9, 0.999), eps=1e-6, max_trust_ratio=max_trust_ratio, use_fused=False)
    reference = Lamb([{"params": ps, "weight_decay": wd} for ps, (_, wd) in zip(params, groups)], **hyper)
    layouts = [_zero_layout(shapes, world, align=4) for shapes, _ in groups]
    flats = [[_flatten([p.detach() for p in ps], offs, size * world)[r * size:(r + 1) * size].clone()
              for ps, (offs, size, _) in zip(params, layouts)] for r in range(world)]
    reducer = ThreadAllReduce(world)
    opts = []
    for r in range(world):
        opt = Lamb([{"params": [flats[r][i]], "weight_decay": wd} for i, (_, wd) in enumerate(groups)], **hyper)
        for i, (_, _, pieces) in enumerate(layouts):
            opt.shard(flats[r][i], pieces[r], reducer.for_rank(r) if world > 1 else None)
        opts.append(opt)

    for step in range(4):
        grads = [[torch.randn(p.shape, generator=g) * 10.0 ** (j - 1) for j, p in enumerate(ps)] for ps in params]
        for ps, gs in zip(params, grads):
            for p, grad in zip(ps, gs):
                p.grad = grad.clone()
        reference.step()

        def run(r):
            for i, (offs, size, _) in enumerate(layouts):
                flats[r][i].grad = _flatten(grads[i], offs, size * world)[r * size:(r + 1) * size].clone()
            for i in range(len(groups)):  # one call per group, as DeepSpeed's ZeRO-1/2 wrapper does
                whole = opts[r].param_groups
                opts[r].param_groups = [whole[i]]
                opts[r].step()
                opts[r].param_groups = whole

        threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, (offs, size, _) in enumerate(layouts):
            whole = torch.cat([flats[r][i] for r in range(world)])
            for p, off in zip(params[i], offs):
                torch.testing.assert_close(whole[off:off + p.numel()].view(p.shape), p.detach(), atol=1e-6,
                                           rtol=1e-5, msg=f"step {step} group {i}")
            covered = torch.zeros(whole.numel(), dtype=torch.bool)
            for p, off in zip(params[i], offs):
                covered[off:off + p.numel()] = True
            assert torch.all(whole[~covered] == 0)  # padding is never updated


def test_lamb_on_flat_partitions_without_pieces_differs():
    """The control: the same flat partitions stepped as if they were parameters (one trust ratio per partition, the
    reason LAMB was refused under ZeRO) do not match per-parameter Lamb."""
    g = torch.Generator().manual_seed(4)
    shapes = [(7, 13), (31,), (3, 5)]
    params = [nn.Parameter(torch.randn(s, generator=g) * (j + 1)) for j, s in enumerate(shapes)]
    reference = Lamb([{"params": params, "weight_decay": 0.01}], lr=0.02, use_fused=False)
    offs, size, _ = _zero_layout(shapes, 2, align=4)
    flat = _flatten([p.detach() for p in params], offs, size * 2)
    naive = Lamb([{"params": [flat], "weight_decay": 0.01}], lr=0.02, use_fused=False)
    grads = [torch.randn(s, generator=g) for s in shapes]
    for p, grad in zip(params, grads):
        p.grad = grad
    flat.grad = _flatten(grads, offs, size * 2)
    reference.step()
    naive.step()
    worst = max((flat[o:o + p.numel()].view(p.shape) - p.detach()).abs().max().item() for p, o in zip(params, offs))
    assert worst > 1e-3


def test_flat_pieces_checks():
    with pytest.raises(ValueError, match="differ in length"):
        FlatPieces((0,), (3, 4), (0,), 1)
    with pytest.raises(ValueError, match="outside"):
        FlatPieces((0,), (3,), (2,), 2)
    opt = Lamb([nn.Parameter(torch.zeros(4))], use_fused=False)
    with pytest.raises(ValueError, match="reach element 6"):
        opt.shard(torch.zeros(5), FlatPieces((2,), (4,), (0,), 1))


def _adamw_run(make, dtype=torch.float32, steps=6):
    """Parameters after `steps` AdamW steps of make(groups) from fixed weights and gradients (cast to dtype)."""
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(n, generator=g, dtype=torch.float64) for n in (7, 130, 1, 1031)]
    grads = [[torch.randn(n.shape, generator=g, dtype=torch.float64) * (s + 1) for n in start] for s in range(steps)]
    params = [torch.nn.Parameter(x.to(dtype)) for x in start]
    opt = make([{"params": params[:3], "weight_decay": 0.01}, {"params": params[3:], "weight_decay": 0.0}])
    for step in range(steps):
        for p, gr in zip(params, grads[step]):
            p.grad = gr.to(dtype)
        opt.step()
    return opt, params


def test_adamw_foreach_path_is_bit_equal_to_the_loop():
    """build_optimizer('adamw', fused=False) takes torch's foreach path; its updates equal the per-tensor loop."""
    from bertforge.optim import build_optimizer

    ours, a = _adamw_run(lambda g: build_optimizer("adamw", g, 1e-3, fused=False))
    _, b = _adamw_run(lambda g: torch.optim.AdamW(g, lr=1e-3, eps=1e-6, foreach=False))
    assert ours.defaults["foreach"] is True and not ours.defaults["fused"]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_adamw_on_cpu_is_fused_within_the_loops_rounding():
    """By default build_optimizer('adamw') takes torch's fused AdamW on CPU. Not bit-equal to the per-tensor loop:
    its error against an fp64 run of the loop must stay within 2x the loop's own fp32 error (+ one fp32 ulp of the
    weights' scale for steps where the loop happens to be exact)."""
    from bertforge.optim import build_optimizer

    fused, got = _adamw_run(lambda g: build_optimizer("adamw", g, 1e-3))
    assert fused.defaults["fused"] is True
    _, loop = _adamw_run(lambda g: torch.optim.AdamW(g, lr=1e-3, eps=1e-6, foreach=False))
    _, exact = _adamw_run(lambda g: torch.optim.AdamW(g, lr=1e-3, eps=1e-6, foreach=False), dtype=torch.float64)
    for x, y, ref in zip(got, loop, exact):
        noise = (y.double() - ref).abs().max().item()
        ulp = torch.finfo(torch.float32).eps * ref.abs().max().item()
        assert (x.double() - ref).abs().max().item() <= 2 * noise + ulp
