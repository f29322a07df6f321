"""kernels/layer_norm.py (bias + dropout + residual + LayerNorm) against torch: output and all five gradients,
odd shapes, fp32/fp16/bf16; dropout statistics and forward/backward consistency of its mask."""
import math

import pytest
import torch

from tests.kernels._kernel_tolerance import assert_within_noise
import triton
import triton.language as tl

from bertforge.kernels.layer_norm import _tile, bias_dropout_add_layernorm, bias_dropout_add_layernorm_forward
from bertforge.kernels.reference import (bias_dropout_add_layernorm_ref, dropout_scale, layer_norm_dropout_keep_ref,
                                         quantized_dropout_p)


def dropout_keep_mask(seed, shape, p, row_ids=None, bits=8):
    """The kernel's keep mask over a (..., h) tensor, replayed by the pure-torch Philox of bertforge.kernels.reference."""
    h = shape[-1]
    return layer_norm_dropout_keep_ref(seed, math.prod(shape) // h, h, p, row_ids, dropout_bits=bits).view(shape)

SHAPES = [(1, 1, 7), (3, 5, 129), (37, 768), (2, 3, 1000)]
EPS = 1e-12  # BERT's


def _inputs(shape, dtype, param_dtype=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = shape[-1]
    param_dtype = param_dtype or dtype
    x = torch.randn(shape, generator=g).to(dtype)
    res = (torch.randn(shape, generator=g) * 2 + 0.5).to(dtype)
    bias = (torch.randn(h, generator=g) * 0.1).to(param_dtype)
    w = (1 + 0.3 * torch.randn(h, generator=g)).to(param_dtype)
    lnb = (0.1 * torch.randn(h, generator=g)).to(param_dtype)
    dy = torch.randn(shape, generator=g)
    return [x, bias, res, w, lnb], dy


def _run(fn, args, dy):
    args = [a.detach().clone().requires_grad_() for a in args]
    y = fn(*args)
    y.backward(dy.to(y.dtype))
    return [y] + [a.grad for a in args]


NAMES = ("out", "dx", "dbias", "dresidual", "dweight", "dln_bias")


def _check(args, dy, p, seed, dtype, bits=8):
    mask = dropout_keep_mask(seed, args[0].shape, p, bits=bits) if p > 0 else None
    out = _run(lambda *a: bias_dropout_add_layernorm(*a, EPS, p, seed=seed, dropout_bits=bits), args, dy)
    lowp = _run(lambda *a: bias_dropout_add_layernorm_ref(*a, EPS, p, keep_mask=mask, dropout_bits=bits), args, dy)
    exact = _run(lambda *a: bias_dropout_add_layernorm_ref(*a, EPS, p, keep_mask=mask, dropout_bits=bits),
                 [a.double() for a in args], dy.double())
    for name, o, t, e, a in zip(NAMES, out, lowp, exact, [args[0]] + args):
        assert o.dtype == a.dtype, name
        assert_within_noise(o, t, e, name=f"{name} {dtype} p={p}")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_matches_torch_without_dropout(shape, dtype):
    args, dy = _inputs(shape, dtype, seed=shape[-1])
    _check(args, dy, 0.0, 0, dtype)


@pytest.mark.parametrize("shape", [(1, 1, 7), (3, 5, 129), (2, 3, 1000)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bits", [8, 24])
def test_dropout_forward_backward_use_the_same_mask(shape, dtype, bits):
    """Replaying the kernel's mask in the torch reference gives the same output and all gradients."""
    args, dy = _inputs(shape, dtype, seed=1)
    _check(args, dy, 0.25, 1234, dtype, bits)


def test_low_precision_activations_fp32_params():
    args, dy = _inputs((4, 9, 96), torch.bfloat16, param_dtype=torch.float32)
    out = _run(lambda *a: bias_dropout_add_layernorm(*a, EPS, 0.0), args, dy)
    exact = _run(lambda *a: bias_dropout_add_layernorm_ref(*a, EPS), [a.double() for a in args], dy.double())
    for name, o, e, a in zip(NAMES, out, exact, [args[0]] + args):
        assert o.dtype == a.dtype, name
        torch.testing.assert_close(o.double(), e, rtol=0.02, atol=0.03 * max(1.0, e.abs().max().item()))


@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize("bits", [8, 24])
def test_dropout_statistics(p, bits):
    """Keep rate within 5 sigma of the binomial of the quantised p; E[dropout(z)] = z (mean of the saved pre-LN
    sum), kept values exactly 1 / (1 - p_q)."""
    n_rows, h = 97, 1031
    n = n_rows * h
    p_q = quantized_dropout_p(p, bits)
    keep = dropout_keep_mask(7, (n_rows, h), p, bits=bits)
    sigma = math.sqrt(n * p_q * (1 - p_q))
    assert abs(keep.sum().item() - n * (1 - p_q)) < 5 * sigma
    ones = torch.ones(n_rows, h)
    zeros = torch.zeros(h)
    _, s, _, _ = bias_dropout_add_layernorm_forward(ones, zeros, torch.zeros(n_rows, h), torch.ones(h), zeros,
                                                    EPS, p, torch.tensor([7]), dropout_bits=bits)
    assert torch.equal(s, torch.where(keep, torch.tensor(dropout_scale(p, bits)), 0.0))  # bit for bit
    assert abs(s.mean().item() - 1.0) < 5 * sigma / n / (1 - p_q)
    # different rows and columns draw different numbers: rows are not copies of each other
    assert not torch.equal(keep[0], keep[1])


def test_dropout_seeding():
    args, _ = _inputs((3, 7, 65), torch.float32)
    a = bias_dropout_add_layernorm(*args, EPS, 0.3, seed=5)
    assert torch.equal(a, bias_dropout_add_layernorm(*args, EPS, 0.3, seed=5))
    assert not torch.equal(a, bias_dropout_add_layernorm(*args, EPS, 0.3, seed=6))
    torch.manual_seed(0)
    b = bias_dropout_add_layernorm(*args, EPS, 0.3)
    torch.manual_seed(0)
    assert torch.equal(b, bias_dropout_add_layernorm(*args, EPS, 0.3))


def test_custom_op_registration_and_compile():
    """opcheck of the torch.library op; under torch.compile the seed is an input, not a baked-in constant."""
    from bertforge.kernels.layer_norm import _fwd_op

    args, _ = _inputs((3, 5, 33), torch.float32)
    args = [a.requires_grad_() for a in args]
    torch.library.opcheck(_fwd_op, (*args, torch.tensor([3]), None, EPS, 0.2, True, 8))
    fn = lambda *a: bias_dropout_add_layernorm(*a, EPS, 0.3)  # noqa: E731
    compiled = torch.compile(fn, backend="aot_eager")
    torch.manual_seed(0)
    a = compiled(*args)
    torch.manual_seed(0)
    assert torch.equal(a, fn(*args))
    assert not torch.equal(a, compiled(*args))


def test_dropout_row_ids_give_each_row_its_own_stream():
    """Default row ids are the row indices; with explicit ids a row's mask follows its id, not its place in the batch
    (what per-sample seeding needs), also for ids past 2^32 (both counter words of the row id are used)."""
    args, dy = _inputs((6, 37), torch.float32, seed=4)
    rows = torch.arange(6)
    a = bias_dropout_add_layernorm(*args, EPS, 0.3, seed=11)
    assert torch.equal(a, bias_dropout_add_layernorm(*args, EPS, 0.3, seed=11, row_ids=rows))
    ids = torch.tensor([5, 2**40 + 3, 0, 2**33, 7, 2**32 + 5])
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    x, bias, res, w, lnb = args
    b = bias_dropout_add_layernorm(x, bias, res, w, lnb, EPS, 0.3, seed=11, row_ids=ids)
    c = bias_dropout_add_layernorm(x[perm], bias, res[perm], w, lnb, EPS, 0.3, seed=11, row_ids=ids[perm])
    assert torch.equal(b[perm], c)
    keep = layer_norm_dropout_keep_ref(11, 6, 37, 0.3, ids)
    assert not torch.equal(keep[1], keep[5])  # 2^40 + 3 vs 2^32 + 5: the high word matters
    out = _run(lambda *a: bias_dropout_add_layernorm(*a, EPS, 0.3, seed=11, row_ids=ids), args, dy)
    ref = _run(lambda *a: bias_dropout_add_layernorm_ref(*a, EPS, 0.3, keep_mask=keep), args, dy)
    for name, o, t in zip(NAMES, out, ref):  # forward and backward replay the same mask
        torch.testing.assert_close(o, t, rtol=1e-5, atol=1e-5, msg=name)


def test_reference_with_a_seed_draws_the_kernels_mask():
    """The CPU path (bertforge.kernels.reference) given the kernel's seed and row ids drops the same elements: output and all
    gradients agree to fp32 rounding."""
    args, dy = _inputs((4, 9, 65), torch.float32, seed=2)
    ids = torch.randint(0, 2**62, (36,), generator=torch.Generator().manual_seed(3))
    seed = torch.tensor([2**61 + 17])
    out = _run(lambda *a: bias_dropout_add_layernorm(*a, EPS, 0.1, seed=seed, row_ids=ids), args, dy)
    ref = _run(lambda *a: bias_dropout_add_layernorm_ref(*a, EPS, 0.1, seed=seed, row_ids=ids), args, dy)
    for name, o, t in zip(NAMES, out, ref):
        torch.testing.assert_close(o, t, rtol=1e-5, atol=1e-5, msg=name)


@triton.jit
def _tile_probe_kernel(OUT_ptr, row0, n_rows, n_cols, BLOCK_M: tl.constexpr, BLOCK_Q: tl.constexpr,
                       DROP_GROUP: tl.constexpr):
    """Writes the epilogue kernels' element offsets of rows row0.. into a (BLOCK_M, G * BLOCK_Q) int64 buffer."""
    offs, mask, _ = _tile(row0 + tl.arange(0, BLOCK_M), n_rows, n_cols, BLOCK_Q, DROP_GROUP)
    local, _, _ = _tile(tl.arange(0, BLOCK_M), BLOCK_M, DROP_GROUP * BLOCK_Q, BLOCK_Q, DROP_GROUP)
    tl.store(OUT_ptr + local, tl.where(mask, offs, -1))


@pytest.mark.parametrize("group", [16, 4])
def test_element_offsets_are_int64_past_2_to_31(group):
    """The index arithmetic at rows whose offsets pass 2^31 (BERT-base h=768 from row 2,796,203 on), checked on the
    kernels' own helper without allocating such a tensor."""
    n_cols, block_m, block_q = 768, 4, 1024 // group
    row0 = 2**31 // n_cols + 1000
    out = torch.empty(block_m, group * block_q, dtype=torch.int64)
    _tile_probe_kernel[(1,)](out, row0, row0 + 3, n_cols, BLOCK_M=block_m, BLOCK_Q=block_q, DROP_GROUP=group)
    want = torch.full_like(out, -1)
    want[:3, :n_cols] = (row0 + torch.arange(3))[:, None] * n_cols + torch.arange(n_cols)
    assert torch.equal(out, want) and out.max() > 2**31
