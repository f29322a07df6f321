"""kernels/dropout.py (row-wise Philox dropout, the embeddings') against its pure-torch replay
(bertforge.kernels.reference.dropout_ref with the same seed and row ids): bit-identical forward and backward on odd shapes in
fp32/fp16/bf16 at 8- and 24-bit thresholds, keep rate within binomial bounds of the quantised p and the mean kept,
seeding, row ids, custom-op registration and torch.compile."""
import math

import pytest
import torch

from bertforge.kernels.dropout import dropout
from bertforge.kernels.reference import dropout_ref, dropout_scale, layer_norm_dropout_keep_ref, quantized_dropout_p

SHAPES = [(1, 1, 7), (3, 5, 129), (37, 64), (2, 3, 1000)]


def _run(fn, x, dy):
    x = x.detach().clone().requires_grad_()
    y = fn(x)
    y.backward(dy.to(y.dtype))
    return y, x.grad


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize("bits", [8, 24])
def test_matches_the_reference_replay(shape, dtype, p, bits):
    """Exact, except that the interpreter truncates fp32 -> bf16 (the GPU rounds): one bf16 ulp there."""
    tol = dict(atol=0, rtol=2**-7 if dtype == torch.bfloat16 else 0)
    g = torch.Generator().manual_seed(1)
    x, dy = torch.randn(shape, generator=g).to(dtype), torch.randn(shape, generator=g)
    n_rows = math.prod(shape[:-1])
    ids = torch.randint(0, 2**62, (n_rows,), generator=g)
    for row_ids in (None, ids):
        got = _run(lambda t: dropout(t, p, seed=9, row_ids=row_ids, dropout_bits=bits), x, dy)
        want = _run(lambda t: dropout_ref(t.float(), p, seed=9, row_ids=row_ids, dropout_bits=bits).to(dtype), x, dy)
        for a, b in zip(got, want):
            assert a.dtype == dtype
            assert torch.equal(a == 0, b == 0)
            torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("p", [0.1, 0.3])
@pytest.mark.parametrize("bits", [8, 24])
def test_keep_rate_within_binomial_bounds(p, bits):
    """Keep rate 1 - p_q (the quantised p) within 5 sigma, kept values exactly 1 / (1 - p_q): the mean stays 1."""
    x = torch.ones(257, 130)
    n = x.numel()
    y = dropout(x, p, seed=3, dropout_bits=bits)
    p_q = quantized_dropout_p(p, bits)
    kept = int((y != 0).sum())
    sigma = math.sqrt(n * p_q * (1 - p_q))
    assert abs(kept - n * (1 - p_q)) < 5 * sigma
    assert torch.equal(y[y != 0], torch.full((kept,), dropout_scale(p, bits), dtype=torch.float32))
    assert abs(y.mean().item() - 1.0) < 5 * sigma / n / (1 - p_q)


def test_seeding_and_identity_at_zero():
    x = torch.randn(6, 33)
    assert dropout(x, 0.0) is x
    a = dropout(x, 0.3, seed=5)
    assert torch.equal(a, dropout(x, 0.3, seed=torch.tensor([5])))
    assert not torch.equal(a, dropout(x, 0.3, seed=6))
    torch.manual_seed(0)
    b = dropout(x, 0.3)  # key drawn from torch's generator on x's device
    torch.manual_seed(0)
    assert torch.equal(b, dropout(x, 0.3))


def test_row_ids_move_with_their_rows():
    x = torch.randn(6, 37)
    ids = torch.tensor([5, 2**40 + 3, 0, 2**33, 7, 2**32 + 5])
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    a = dropout(x, 0.3, seed=11, row_ids=ids)
    assert torch.equal(a[perm], dropout(x[perm], 0.3, seed=11, row_ids=ids[perm]))
    keep = layer_norm_dropout_keep_ref(11, 6, 37, 0.3, ids)
    assert torch.equal(a != 0, keep & (x != 0))


def test_bad_arguments():
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="row_ids"):
        dropout(x, 0.1, seed=1, row_ids=torch.arange(3))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        dropout(x, 1.0)


def test_custom_op_registration_and_compile():
    """opcheck of the torch.library op; under torch.compile the seed is an input, not a baked-in constant."""
    from bertforge.kernels.dropout import _dropout_op

    x = torch.randn(5, 33, requires_grad=True)
    torch.library.opcheck(_dropout_op, (x, torch.tensor([3]), torch.arange(5), 0.2, 8))
    fn = lambda t: dropout(t, 0.3)  # noqa: E731
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    torch.manual_seed(0)
    a = compiled(x)
    torch.manual_seed(0)
    assert torch.equal(a, fn(x))
    assert not torch.equal(a, compiled(x))
