"""kernels/mlm_loss_cpu.py (the 'none' backend's MLM loss on CPU: blocked decoder GEMM, row-chunked softmax, backward
written over the logits) against torch's cross-entropy on full logits (`masked_lm_loss_ref`): loss, argmax and the
gradients of hidden, decoder weight and bias, within 2x plain torch's error against fp64; awkward sizes (rows and
vocabulary not multiples of the chunks), ignored rows, fp32 / bf16 / fp16 and bf16 autocast over fp32 weights."""
import math

import pytest
import torch

from tests.kernels._kernel_tolerance import assert_within_noise
from tests.kernels._mlm_inputs import mlm_inputs as _inputs
from bertforge import ops
from bertforge.kernels import mlm_loss_cpu
from bertforge.kernels.mlm_loss_cpu import masked_lm_loss_cpu
from bertforge.kernels.reference import masked_lm_loss_ref


def _run(fn, args, labels, dloss=0.7, autocast=False):
    args = [a.detach().clone().requires_grad_() for a in args]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss, preds = fn(*args, labels)
    (loss * dloss).backward()
    return loss, preds, [a.grad for a in args]


def _check(args, labels, autocast=False, name=""):
    loss, preds, grads = _run(masked_lm_loss_cpu, args, labels, autocast=autocast)
    lo_loss, _, lo_grads = _run(masked_lm_loss_ref, args, labels, autocast=autocast)
    ex_loss, ex_preds, ex_grads = _run(masked_lm_loss_ref, [a.double() for a in args], labels)
    assert loss.dtype == torch.float32 and preds.dtype == torch.int64
    assert_within_noise(loss, lo_loss, ex_loss.float(), name=f"loss {name}")
    logits = torch.nn.functional.linear(*(a.double() for a in args))
    top2 = logits.topk(min(2, logits.shape[1]), dim=-1).values
    clear = (top2[:, 0] - top2[:, -1]) > 1e-2 * top2[:, 0].abs().clamp_min(1)  # not a near-tie
    assert torch.equal(preds[clear], ex_preds[clear])
    for what, o, t, e, a in zip(("dhidden", "dweight", "dbias"), grads, lo_grads, ex_grads, args):
        assert o.dtype == a.dtype and o.is_contiguous()
        assert_within_noise(o, t, e, name=f"{what} {name}")


@pytest.mark.parametrize("n,h,V", [(1, 8, 7), (37, 24, 2100), (70, 16, 3001)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_matches_torch_cross_entropy(n, h, V, dtype):
    args, labels = _inputs(n, h, V, dtype, seed=n)
    _check(args, labels, name=f"{dtype} n={n} V={V}")


def test_bf16_autocast_over_fp32_weights():
    """As `bertforge pretrain`'s CPU benchmark rows run it: the GEMMs in bf16, fp32 parameter gradients."""
    args, labels = _inputs(45, 32, 2500, torch.float32, seed=3)
    _check(args, labels, autocast=True, name="autocast")


def test_small_chunks(monkeypatch):
    """Row and column chunks that split the rows and the vocabulary several times, unevenly."""
    monkeypatch.setattr(mlm_loss_cpu, "ROW_CHUNK", 5)
    monkeypatch.setattr(mlm_loss_cpu, "COL_CHUNK", 64)
    args, labels = _inputs(23, 16, 301, torch.float32, seed=5)
    _check(args, labels, name="small chunks")


def test_all_rows_ignored_gives_nan_and_zero_grads():
    args, labels = _inputs(9, 16, 70, torch.float32)
    labels[:] = -100
    loss, _, grads = _run(masked_lm_loss_cpu, args, labels)
    assert math.isnan(loss.item())  # as torch.nn.functional.cross_entropy
    assert all(torch.count_nonzero(g) == 0 for g in grads)


def test_no_grad_and_frozen_weight():
    args, labels = _inputs(12, 16, 90, torch.float32)
    with torch.no_grad():
        loss, preds = masked_lm_loss_cpu(*args, labels)
    ref_loss, ref_preds = masked_lm_loss_ref(*args, labels)
    torch.testing.assert_close(loss, ref_loss)
    hidden = args[0].clone().requires_grad_()
    loss, _ = masked_lm_loss_cpu(hidden, args[1], args[2], labels)  # weight and bias need no gradient
    loss.backward()
    assert hidden.grad is not None and hidden.grad.shape == hidden.shape


def test_second_backward_refuses():
    """The backward overwrites the saved logits: a second pass through the same graph must fail loudly."""
    args, labels = _inputs(6, 8, 40, torch.float32)
    hidden = args[0].clone().requires_grad_()
    loss, _ = masked_lm_loss_cpu(hidden, args[1], args[2], labels)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_ops_none_backend_takes_it_on_cpu():
    args, labels = _inputs(6, 8, 40, torch.float32)
    hidden = args[0].clone().requires_grad_()
    loss, _ = ops.masked_lm_loss(hidden, args[1], args[2], labels, backend="none")
    assert type(loss.grad_fn).__name__ == "_MaskedLMLossCPUBackward"
    exact, _ = ops.masked_lm_loss(*(a.double() for a in args), labels, backend="none")  # fp64: the plain oracle
    assert exact.grad_fn is None and exact.dtype == torch.float64
