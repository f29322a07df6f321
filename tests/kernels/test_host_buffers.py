"""kernels/host_buffers.py (host memory reused across steps), kernels/embedding_cpu.py (the word embedding whose
gradient lives on it) and the MLM loss's CPU path on it: memory is handed out again only when nothing else holds it
(a kept `.grad`, a view of it, gradient accumulation), and the results equal those of fresh memory / F.embedding."""
import pytest
import torch
import torch.nn.functional as F

from tests.kernels._kernel_tolerance import assert_within_noise
from tests.kernels._mlm_inputs import mlm_inputs
from bertforge import ops
from bertforge.kernels import embedding_cpu, host_buffers, mlm_loss_cpu
from bertforge.kernels.host_buffers import ReusedBuffer


@pytest.fixture(autouse=True)
def _reuse_on():
    host_buffers.reuse(True)
    yield
    host_buffers.reuse(True)


def _ptr(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def test_reused_only_when_free():
    buf = ReusedBuffer()
    a = buf.take((100, 7), torch.float32)
    first = _ptr(a)
    b = buf.take((100, 7), torch.float32)  # a still alive: fresh memory, a untouched
    assert _ptr(b) != first
    a.fill_(1.0)
    b.fill_(2.0)
    assert bool((a == 1.0).all())
    del a, b
    c = buf.take((50, 3), torch.bfloat16)  # smaller, another dtype: the kept storage again
    assert c.shape == (50, 3) and c.dtype == torch.bfloat16 and c.is_contiguous()
    kept = _ptr(c)
    view = c[10:20]
    del c
    assert _ptr(buf.take((50, 3), torch.bfloat16)) != kept  # a view still holds it
    del view


def test_grows_and_switches_off():
    buf = ReusedBuffer()
    small = _ptr(buf.take((10,), torch.float32))
    assert buf.nbytes >= 40
    big = buf.take((1000,), torch.float32)  # larger than the kept storage: fresh, kept from now on
    assert _ptr(big) != small and buf.nbytes >= 4000
    big_ptr = _ptr(big)
    del big
    assert _ptr(buf.take((1001,), torch.float32)) == big_ptr  # within the 1/8 headroom
    host_buffers.reuse(False)
    assert not host_buffers.reusing()
    x = buf.take((10,), torch.float32)
    assert buf.nbytes == 0 and x.shape == (10,)
    buf.release()
    assert buf.nbytes == 0


@pytest.mark.parametrize("padding_idx", [None, 0, 7])
def test_embedding_equals_torch(padding_idx):
    """Forward equal; the weight gradient within 2x F.embedding's error against fp64 (duplicated ids, 2-D ids,
    padding rows); bf16 weights and no-grad calls take F.embedding itself."""
    torch.manual_seed(0)
    w = torch.randn(301, 24)
    ids = torch.randint(0, 40, (13, 17))
    ids[0, :4] = 0
    ids[1, :3] = 7
    g = torch.randn(13, 17, 24)
    grads = []
    for fn, dtype in ((embedding_cpu.embedding_cpu, torch.float32), (F.embedding, torch.float32),
                      (F.embedding, torch.float64)):
        wx = w.to(dtype).detach().clone().requires_grad_()
        out = fn(ids, wx, padding_idx)
        out.backward(g.to(dtype))
        grads.append((out.detach(), wx.grad))
    (out, grad), (ref_out, ref_grad), (_, exact) = grads
    assert torch.equal(out, ref_out)
    assert_within_noise(grad, ref_grad, exact, name="embedding weight grad")
    if padding_idx is not None:
        assert bool((grad[padding_idx] == 0).all())
    wb = w.bfloat16().requires_grad_()
    embedding_cpu.embedding_cpu(ids, wb, padding_idx).float().sum().backward()
    assert wb.grad.dtype == torch.bfloat16


def test_embedding_grad_kept_by_caller_is_never_overwritten():
    """A gradient still referenced (a kept `.grad`) is not reused: the next backward gets fresh memory, and with
    `.grad` left in place the two steps accumulate, as with F.embedding."""
    torch.manual_seed(1)
    w = torch.randn(50, 8, requires_grad=True)
    ids1, ids2 = torch.tensor([1, 2, 2, 3]), torch.tensor([3, 4, 4, 4])
    ops.embedding(ids1, w).sum().backward()
    kept = w.grad
    snapshot = kept.clone()
    w.grad = None
    ops.embedding(ids2, w).sum().backward()
    assert torch.equal(kept, snapshot)  # not overwritten by the second backward
    assert _ptr(w.grad) != _ptr(kept)
    del kept
    w.grad = None
    ops.embedding(ids1, w).sum().backward()
    ops.embedding(ids2, w).sum().backward()  # accumulation into .grad
    expected = torch.zeros(50, 8)
    expected.index_add_(0, torch.cat([ids1, ids2]), torch.ones(8, 8))
    assert torch.equal(w.grad, expected)


def test_embedding_reuses_memory_between_steps():
    w = torch.randn(50, 8, requires_grad=True)
    ids = torch.tensor([1, 2, 3])
    ops.embedding(ids, w).sum().backward()
    first = _ptr(w.grad)
    w.grad = None  # zero_grad(set_to_none=True)
    ops.embedding(ids, w).sum().backward()
    assert _ptr(w.grad) == first


@pytest.mark.parametrize("autocast", [False, True])
def test_mlm_loss_buffers_reused_and_kept_grads_intact(autocast):
    """Two steps of the CPU MLM loss: the second runs on the first's memory once its gradient is dropped, and gives
    the result of fresh memory (reuse switched off) bit for bit; a weight gradient still held is never overwritten."""
    args, labels = mlm_inputs(37, 16, 2500, torch.float32, seed=3)

    def step(keep_grad=False):
        hidden, weight, bias = (a.detach().clone().requires_grad_() for a in args)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss, _ = mlm_loss_cpu.masked_lm_loss_cpu(hidden, weight, bias, labels)
        loss.backward()
        return loss.detach(), weight.grad, hidden.grad

    loss1, wgrad1, hgrad1 = step()
    snapshot, ptr1 = wgrad1.clone(), _ptr(wgrad1)
    loss2, wgrad2, hgrad2 = step()  # wgrad1 still held: fresh memory
    assert torch.equal(wgrad1, snapshot) and _ptr(wgrad2) != ptr1
    assert torch.equal(loss1, loss2) and torch.equal(wgrad1, wgrad2) and torch.equal(hgrad1, hgrad2)
    ptr2 = _ptr(wgrad2)
    del wgrad1, wgrad2
    loss3, wgrad3, _ = step()
    assert _ptr(wgrad3) == ptr2  # both earlier gradients dropped: reused
    host_buffers.reuse(False)
    loss4, wgrad4, _ = step()
    assert torch.equal(loss3, loss4) and torch.equal(wgrad3, wgrad4)


def test_pool_hands_out_only_free_storages():
    """BufferPool: storages held at once are distinct; one released (every view gone) is handed out again, a large
    enough one first; past the limit memory is fresh; with reuse off nothing is kept."""
    pool = host_buffers.BufferPool(limit=2)
    a, b = pool.take((1000,), torch.float32), pool.take((10,), torch.float32)
    assert _ptr(a) != _ptr(b) and pool.nbytes >= 4000 + 40
    c = pool.take((10,), torch.float32)  # both held: past the limit, fresh and not kept
    assert _ptr(c) not in (_ptr(a), _ptr(b)) and pool.nbytes < 2 * 4000
    first, small = _ptr(a), _ptr(b)
    view = a[5:]
    del a
    assert _ptr(pool.take((10,), torch.float32)) not in (first, small)  # a's view still holds its storage
    del view, b
    big = pool.take((900,), torch.float32)
    assert _ptr(big) == first  # the large enough one, not the first free one
    grown = pool.take((900,), torch.float32)
    assert _ptr(grown) != first and grown.shape == (900,)  # the other free one, grown
    host_buffers.reuse(False)
    pool.take((10,), torch.float32)
    assert pool.nbytes == 0


def test_native_multipliers_on_pooled_memory_stay_correct():
    """The C++ row multipliers written into pooled memory (kernels/reference.py): a multiplier still held (as
    autograd holds it until backward) is never overwritten by the next draw, and the values equal the torch oracle."""
    from bertforge import csrc
    from bertforge.kernels import reference as R

    saved = R._NATIVE
    try:
        R.use_native_philox(None)
        want = [R.layer_norm_dropout_multiplier_ref(s, 6, 37, 0.2, torch.arange(6)) for s in (3, 4)]
        R.use_native_philox(csrc.philox_words, csrc.philox_keep, csrc.philox_keep_rows, csrc.philox_multiplier_rows)
        held = R.layer_norm_dropout_multiplier_ref(3, 6, 37, 0.2, torch.arange(6))
        other = R.layer_norm_dropout_multiplier_ref(4, 6, 37, 0.2, torch.arange(6))
        assert _ptr(held) != _ptr(other) and torch.equal(held, want[0]) and torch.equal(other, want[1])
        ptr = _ptr(held)
        del held
        again = R.layer_norm_dropout_multiplier_ref(3, 6, 37, 0.2, torch.arange(6))
        assert _ptr(again) == ptr and torch.equal(again, want[0])
    finally:
        R._NATIVE = saved
