"""kernels/bias_gelu.py against torch: forward and both gradients, odd shapes, fp32/fp16/bf16, erf and tanh."""
import pytest
import torch
import torch.nn.functional as F

from tests.kernels._kernel_tolerance import assert_within_noise
from bertforge.kernels.bias_gelu import bias_gelu
from bertforge.kernels.reference import bias_gelu_ref

SHAPES = [(1, 1, 7), (3, 5, 129), (37, 768), (2, 3, 1000)]


def _run(fn, x, b, dy, approximate):
    x = x.detach().clone().requires_grad_()
    b = b.detach().clone().requires_grad_()
    y = fn(x, b, approximate)
    y.backward(dy.to(y.dtype))
    return y, x.grad, b.grad


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_bias_gelu_matches_torch(shape, dtype, approximate):
    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=g) * 3).to(dtype)
    b = torch.randn(shape[-1], generator=g).to(dtype)
    dy = torch.randn(shape, generator=g)
    out = _run(bias_gelu, x, b, dy, approximate)
    lowp = _run(bias_gelu_ref, x, b, dy, approximate)
    exact = _run(bias_gelu_ref, x.double(), b.double(), dy.double(), approximate)
    for name, o, t, e in zip(("y", "dx", "dbias"), out, lowp, exact):
        assert o.dtype == dtype
        assert_within_noise(o, t, e, name=f"{name} {dtype} {approximate}")


def test_bias_gelu_low_precision_x_fp32_bias():
    """Under autocast the linear's output is bf16 while the bias parameter is fp32: y/dx stay bf16, dbias fp32."""
    x = torch.randn(5, 3, 77).bfloat16().requires_grad_()
    b = torch.randn(77, requires_grad=True)
    y = bias_gelu(x, b)
    assert y.dtype == torch.bfloat16
    y.float().square().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and b.grad.dtype == torch.float32
    xr, br = x.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    F.gelu(xr + br).square().sum().backward()
    torch.testing.assert_close(b.grad.double(), br.grad, rtol=0.02, atol=0.02 * br.grad.abs().max().item())


def test_bias_gelu_empty():
    x = torch.zeros(0, 16)
    assert bias_gelu(x, torch.zeros(16)).shape == (0, 16)


def test_custom_op_registration():
    """Schema, fake (meta) kernel and autograd registration of the torch.library ops that torch.compile sees."""
    from bertforge.kernels.bias_gelu import _bias_gelu_fwd_op

    x, b = torch.randn(3, 5, 33, requires_grad=True), torch.randn(33, requires_grad=True)
    torch.library.opcheck(_bias_gelu_fwd_op, (x, b, "tanh"))
