"""kernels/mlm_loss.py (chunked fused linear cross-entropy) against torch's cross-entropy on full logits: loss, argmax
and the gradients of hidden, decoder weight and decoder bias; odd sizes, ignored rows, several chunkings."""
import math

import pytest
import torch

from tests.kernels._kernel_tolerance import assert_within_noise
from tests.kernels._mlm_inputs import mlm_inputs as _inputs
from bertforge.kernels.mlm_loss import masked_lm_loss
from bertforge.kernels.reference import masked_lm_loss_ref


def _run(fn, args, labels, dloss=1.0):
    args = [a.detach().clone().requires_grad_() for a in args]
    loss, preds = fn(*args, labels)
    (loss * dloss).backward()
    return loss, preds, [a.grad for a in args]


CASES = [(1, 32, 101), (37, 64, 1000), (67, 48, 3001)]


@pytest.mark.parametrize("n,h,V", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("chunk_rows", [None, 16])
def test_matches_torch_cross_entropy(n, h, V, dtype, chunk_rows):
    args, labels = _inputs(n, h, V, dtype, seed=n)
    loss, preds, grads = _run(lambda *a: masked_lm_loss(*a, chunk_rows=chunk_rows), args, labels, dloss=0.7)
    lo_loss, lo_preds, lo_grads = _run(masked_lm_loss_ref, args, labels, dloss=0.7)
    ex_loss, ex_preds, ex_grads = _run(masked_lm_loss_ref, [a.double() for a in args], labels, dloss=0.7)
    assert loss.dtype == torch.float32 and preds.dtype == torch.int64
    assert_within_noise(loss, lo_loss, ex_loss.float(), name=f"loss {dtype}")
    # argmax: same index as torch on the same-precision logits wherever the top logit is not a near-tie
    logits = torch.nn.functional.linear(args[0].double(), args[1].double(), args[2].double())
    top2 = logits.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-2 * top2[:, 0].abs().clamp_min(1)
    assert torch.equal(preds[clear], ex_preds[clear])
    for name, o, t, e in zip(("dhidden", "dweight", "dbias"), grads, lo_grads, ex_grads):
        assert o.dtype == dtype
        assert_within_noise(o, t, e, name=f"{name} {dtype} chunk={chunk_rows}")


def test_all_rows_ignored_gives_nan_and_zero_grads():
    args, labels = _inputs(9, 16, 70, torch.float32)
    labels[:] = -100
    loss, _, grads = _run(masked_lm_loss, args, labels)
    assert math.isnan(loss.item())  # as torch.nn.functional.cross_entropy
    assert all(torch.count_nonzero(g) == 0 for g in grads)


def test_no_grad_path_and_fp32_weight_under_bf16_hidden():
    """Eval (no gradients wanted) skips the gradient pass; a bf16 hidden with fp32 decoder params (autocast) gives
    fp32 parameter gradients."""
    args, labels = _inputs(21, 32, 257, torch.float32)
    with torch.no_grad():
        loss, preds = masked_lm_loss(*args, labels)
    ref_loss, _ = masked_lm_loss_ref(*args, labels)
    torch.testing.assert_close(loss, ref_loss)
    hidden = args[0].bfloat16().requires_grad_()
    w, b = args[1].clone().requires_grad_(), args[2].clone().requires_grad_()
    loss, _ = masked_lm_loss(hidden, w, b, labels)
    loss.backward()
    assert hidden.grad.dtype == torch.bfloat16 and w.grad.dtype == torch.float32 and b.grad.dtype == torch.float32
    _, _, ex = _run(masked_lm_loss_ref, [a.double() for a in args], labels)
    torch.testing.assert_close(w.grad.double(), ex[1], atol=0.02 * ex[1].abs().max().item(), rtol=0.05)
    torch.testing.assert_close(b.grad.double(), ex[2], atol=0.02 * ex[2].abs().max().item(), rtol=0.05)


def test_custom_op_opcheck_and_compile_without_recompiles():
    """The loss is a torch.library op: opcheck passes, and torch.compile(dynamic=True, fullgraph=True) compiles it
    once for every number of masked rows (traced, its chunk loop would recompile each batch)."""
    from bertforge.kernels.mlm_loss import _loss_op

    g = torch.Generator().manual_seed(5)
    w, b = torch.randn(101, 32, generator=g).requires_grad_(), torch.randn(101, generator=g).requires_grad_()
    hid = torch.randn(37, 32, generator=g).requires_grad_()
    labels = torch.randint(0, 101, (37,), generator=g)
    torch.library.opcheck(_loss_op, (hid, w, b, labels, True, 8))
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(lambda h, w, b, y: masked_lm_loss(h, w, b, y)[0], backend=backend, dynamic=True,
                             fullgraph=True)
    for n in (37, 53, 11):
        h = torch.randn(n, 32, generator=g).requires_grad_()
        y = torch.randint(0, 101, (n,), generator=g)
        got = compiled(h, w, b, y)
        got.backward()
        grads = [t.grad.clone() for t in (h, w, b)]
        for t in (h, w, b):
            t.grad = None
        want = masked_lm_loss(h, w, b, y)[0]
        want.backward()
        assert torch.equal(got, want)
        assert all(torch.equal(a, t.grad) for a, t in zip(grads, (h, w, b)))
        w.grad = b.grad = None
    assert len(graphs) == 1


class _MatmulDtypes(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the dtypes the loss's GEMMs run in: aten matmuls of the reference path, and the hidden states the
    fused op receives (it computes its logits and gradient GEMMs in that dtype)."""

    MATMULS = ("addmm", "mm", "bmm", "linear", "matmul")

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.MATMULS or name == "masked_lm_loss_fwd":
            self.seen.append((name, args[0].dtype if name == "masked_lm_loss_fwd" else args[-1].dtype))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backend", ["triton", "none"])
def test_fp32_hidden_under_autocast_runs_the_gemms_in_the_autocast_dtype(backend):
    # CUDA autocast keeps LayerNorm in fp32, so the head transform hands the loss fp32 rows; CPU autocast would hand
    # it bf16 (the case no earlier test saw), hence fp32 rows passed in directly under a bf16 autocast context.
    from bertforge import ops

    args, labels = _inputs(23, 32, 301, torch.float32, seed=3)
    hidden, w, b = (a.detach().clone().requires_grad_() for a in args)
    recorder = _MatmulDtypes()
    with torch.autocast("cpu", dtype=torch.bfloat16), recorder:
        loss, _ = ops.masked_lm_loss(hidden, w, b, labels, backend=backend)
    assert recorder.seen and all(dtype == torch.bfloat16 for _, dtype in recorder.seen), recorder.seen
    loss.backward()
    assert hidden.grad.dtype == torch.float32 and w.grad.dtype == torch.float32
    exact, _ = masked_lm_loss_ref(*(a.double() for a in args), labels)
    assert abs(loss.item() - exact.item()) < 0.05 * exact.item()  # bf16 logits: a few 1e-3 relative


def test_logits_rows_are_padded_to_64_elements():
    """V = 30,522 rows would start at 2-byte alignment (scalar loads); the chunk buffer pads rows to 30,528."""
    from bertforge.kernels.mlm_loss import logits_buffer

    buf = logits_buffer(5, 30522, torch.bfloat16, "cpu")
    assert buf.shape == (5, 30522) and buf.stride() == (30528, 1)
    assert (buf.stride(0) * buf.element_size()) % 128 == 0


def _rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.double() - ref.double()).norm() / ref.double().norm()).item()


def test_fp16_gradients_survive_at_pretraining_sizes():
    """fp16 with a loss scale of 2^16 at V = 8,192 and 2,048 labelled rows, logits near 0 (softmax ~ 1 / V, as at
    the start of pretraining): (softmax - onehot) / n_labelled ~ 6e-8 is at fp16's smallest subnormal, so a gradient
    stored in fp16 before the scale is applied loses the non-target terms. The fused loss's input and weight
    gradients (unscaled in fp32) must be as close to the fp32 reference as plain torch's bf16 path's are (the bound
    the bf16 kernels are held to)."""
    n, h, V, scale = 2048, 16, 8192, 2.0 ** 16
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, h, generator=g)
    w, b = torch.randn(V, h, generator=g) * 0.02, torch.zeros(V)
    labels = torch.randint(0, V, (n,), generator=g)
    _, _, ref = _run(masked_lm_loss_ref, [hidden, w, b], labels)
    _, _, fp16 = _run(masked_lm_loss, [t.half() for t in (hidden, w, b)], labels, dloss=scale)
    _, _, bf16 = _run(masked_lm_loss_ref, [t.bfloat16() for t in (hidden, w, b)], labels)
    for name, x, y, r in zip(("dhidden", "dweight"), fp16, bf16, ref):
        assert torch.isfinite(x).all(), name
        e16, ebf = _rel_err(x.float() / scale, r), _rel_err(y, r)
        assert e16 <= ebf, f"{name}: fp16 relative error {e16:.3g} > the bf16 path's {ebf:.3g}"
