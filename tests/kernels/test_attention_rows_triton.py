"""kernels/attention_rows.py (the Triton attention for some query rows, FlashAttention's cu_seqlens_q !=
cu_seqlens_k) against reference.attention_varlen_rows_ref and against the full Triton attention's rows: output, dq,
dk, dv in fp32 to rounding; bf16 within 2x the full kernel's own error against fp32; dropout 0.1 at 8 and 24 bits
with per-sequence row ids drops the full kernel's elements; rows in any order, a sequence without query rows, a
sequence of one token, a query at a sequence's last position, lengths that are not block multiples (the
interpreter's blocks are 16 query rows x 32 keys), head dims 32 and 64, 1 and 3 heads; every GPU autotune config's
block shapes; the custom ops under torch.compile; ops.attention_rows dispatching to it."""
import pytest
import torch

from bertforge import ops
from bertforge.errors import ConfigError
from bertforge.kernels import attention_rows as AR
from bertforge.kernels import reference as R
from bertforge.kernels.attention import attention
from bertforge.kernels.attention_rows import attention_rows
from bertforge.kernels.padding import query_rows_layout

LENGTHS = [37, 1, 70, 5, 19]  # 132 tokens; sequence 3 (tokens 108-112) gets no query row
CU = torch.tensor([0, 37, 38, 108, 113, 132], dtype=torch.int32)
# unsorted; sequence 2 has 20 rows (two query blocks) incl. its last position 107; 36 and 131 are last positions
ROWS = torch.tensor([40, 3, 0, 37, 131, 20, 36, 107, 120, 41, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73,
                     74, 38, 90])
ROW_IDS = torch.tensor([9, 2**40, 3, 4, 77])


def _inputs(nh, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(132, nh, d, generator=g).to(dtype) for _ in range(3))
    return q, k, v, torch.randn(len(ROWS), nh, d, generator=g).to(dtype)


def _grads(fn, q, k, v, dout):
    """fn(q, k, v) -> rows (n, nh, d); -> (out, dq at ROWS, dk, dv), fp32 copies."""
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v)
    out.backward(dout)
    return [out.detach().float(), q.grad[ROWS].float(), k.grad.float(), v.grad.float()]


def _kernel(**kw):
    return lambda q, k, v: attention_rows(q[ROWS], k, v, CU, ROWS, **kw)


def _reference(**kw):
    return lambda q, k, v: R.attention_varlen_rows_ref(q[ROWS], k, v, CU, ROWS, **kw)


def _full_kernel(**kw):
    return lambda q, k, v: attention(q, k, v, cu_seqlens=CU, max_seqlen=70, **kw)[ROWS]


def _assert_close(got, want, tol, what):
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        err = (a - b).abs().max().item()
        assert err <= tol, f"{what} {name}: {err:.3g} > {tol}"


@pytest.mark.parametrize("nh,d", [(1, 64), (3, 32)])
def test_fp32_equals_the_reference_and_the_full_kernels_rows(nh, d):
    q, k, v, dout = _inputs(nh, d, torch.float32, seed=nh)
    got = _grads(_kernel(max_seqlen=70), q, k, v, dout)
    _assert_close(got, _grads(_reference(), q, k, v, dout), 2e-6, "vs reference")
    _assert_close(got, _grads(_full_kernel(), q, k, v, dout), 2e-6, "vs full kernel")
    assert got[2][108:113].abs().max() == 0 and got[3][108:113].abs().max() == 0  # no query row: zero dk, dv


@pytest.mark.parametrize("bits", [8, 24])
def test_dropout_drops_the_full_kernels_elements(bits):
    """With the same seed and row ids the rows see the full kernel's (and the reference's) dropout mask: equal to
    rounding, far from the undropped result."""
    q, k, v, dout = _inputs(3, 32, torch.float32, seed=bits)
    kw = dict(dropout_p=0.1, seed=torch.tensor([123]), row_ids=ROW_IDS, dropout_bits=bits)
    got = _grads(_kernel(**kw), q, k, v, dout)
    _assert_close(got, _grads(_full_kernel(**kw), q, k, v, dout), 2e-6, f"{bits}-bit vs full kernel")
    _assert_close(got, _grads(_reference(**kw), q, k, v, dout), 2e-6, f"{bits}-bit vs reference")
    assert (got[0] - _grads(_kernel(), q, k, v, dout)[0]).abs().max() > 1e-2


def test_bf16_within_twice_the_full_kernels_error():
    q, k, v, dout = _inputs(3, 64, torch.bfloat16, seed=5)
    kw = dict(dropout_p=0.1, seed=torch.tensor([5]), row_ids=ROW_IDS)
    exact = _grads(_reference(**kw), q.float(), k.float(), v.float(), dout.float())
    full = _grads(_full_kernel(**kw), q, k, v, dout)
    rows = _grads(_kernel(**kw), q, k, v, dout)
    for name, e, f, r in zip(("out", "dq", "dk", "dv"), exact, full, rows):
        err, budget = (r - e).abs().max().item(), 2 * (f - e).abs().max().item() + 1e-3
        assert err <= budget, f"bf16 {name}: {err:.3g} > {budget:.3g}"


def test_deterministic_and_the_query_grid_bound():
    """Bit-identical reruns; max_seqlen_q read from the rows (20) or bounded by max_seqlen (70, the GPU default:
    the extra query blocks exit at once) gives the same bits."""
    q, k, v, dout = _inputs(1, 32, torch.float32, seed=3)
    kw = dict(dropout_p=0.1, seed=torch.tensor([8]))
    a = _grads(_kernel(**kw), q, k, v, dout)  # max_seqlen and max_seqlen_q read from cu_seqlens and the rows
    for again in (_kernel(**kw), _kernel(max_seqlen=70, max_seqlen_q=70, **kw)):
        for x, y in zip(a, _grads(again, q, k, v, dout)):
            assert torch.equal(x, y)


def test_repeated_rows():
    """A token's query twice: both rows get its output, dq sums both rows' gradients."""
    rows = torch.tensor([5, 60, 5, 131])
    q, k, v, _ = _inputs(2, 32, torch.float32, seed=2)
    dout = torch.randn(4, 2, 32)

    def grads(fn):
        qq, kk, vv = (t.detach().clone().requires_grad_() for t in (q, k, v))
        out = fn(qq[rows], kk, vv, CU, rows)
        out.backward(dout)
        return [out.detach(), qq.grad, kk.grad, vv.grad]

    _assert_close(grads(attention_rows), grads(R.attention_varlen_rows_ref), 2e-6, "repeated rows")


def test_empty_rows_and_bad_arguments():
    k = torch.randn(132, 2, 32, requires_grad=True)
    q = torch.zeros(0, 2, 32, requires_grad=True)
    out = attention_rows(q, k, k, CU, torch.zeros(0, dtype=torch.int64))
    out.sum().backward()
    assert out.shape == (0, 2, 32) and k.grad.abs().max() == 0
    q = torch.zeros(2, 2, 32)
    for rows in ([0, 132], [-1, 3]):
        with pytest.raises(ValueError, match=r"q_rows must be token indices in \[0, 132\), got"):
            attention_rows(q, k, k, CU, torch.tensor(rows))
    with pytest.raises(ValueError, match=r"q_rows must be \(2,\), one per query row"):
        attention_rows(q, k, k, CU, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"q must be \(n, nh, d\) and k, v \(total, nh, d\)"):
        attention_rows(torch.zeros(2, 3, 32), k, k, CU, torch.tensor([1, 2]))


def test_bounds_below_the_batch_refused_on_the_host():
    """max_seqlen below the longest sequence (70) or max_seqlen_q below the most rows of one sequence (20) would
    leave keys without gradients and rows unwritten: CPU tensors get a ValueError naming the argument, under
    torch.compile too (a GPU is not checked, which would cost a device sync); so do cu_seqlens that do not end at
    k's token count. Rows that are not integers are refused rather than cast."""
    q, k, v, _ = _inputs(1, 32, torch.float32)
    for kw, name in ((dict(max_seqlen=40), r"max_seqlen=40 is below the longest sequence \(70\)"),
                     (dict(max_seqlen=0), r"max_seqlen=0 is below the longest sequence \(70\)"),
                     (dict(max_seqlen_q=0), r"max_seqlen_q=0 is below the most query rows of one sequence \(20\)")):
        with pytest.raises(ValueError, match=name):
            attention_rows(q[ROWS], k, v, CU, ROWS, **kw)
    compiled = torch.compile(lambda q, k, v: attention_rows(q, k, v, CU, ROWS, max_seqlen=40), backend="aot_eager")
    with pytest.raises(ValueError, match=r"max_seqlen=40 is below the longest sequence \(70\)"):
        compiled(q[ROWS], k, v)
    with pytest.raises(ValueError, match=r"cu_seqlens must end at k's 132 tokens, got 113"):
        attention_rows(q[ROWS[:3]], k, v, CU[:-1], ROWS[:3])
    for rows in (ROWS.float(), ROWS > 50):
        with pytest.raises(ValueError, match=r"q_rows must be int64 or int32 token indices, got torch\.(float32|bool)"):
            attention_rows(q[ROWS], k, v, CU, rows)


def _gpu_config_cases():
    for kind, configs in AR.GPU_CONFIGS.items():
        for cfg in configs:
            yield pytest.param(kind, cfg, id=f"{kind}-{cfg.num_warps}w-" + "x".join(map(str, cfg.kwargs.values())))


@pytest.mark.parametrize("kind,cfg", list(_gpu_config_cases()))
def test_every_gpu_autotune_config_matches_the_reference(kind, cfg):
    """Autotune may pick any config of the GPU lists: each one's block shapes (the interpreter ignores warps and
    stages) gives the reference's rows and gradients, with dropout and row ids."""
    q, k, v, dout = _inputs(1, 64, torch.float32, seed=11)
    kw = dict(dropout_p=0.1, seed=torch.tensor([9]), row_ids=ROW_IDS)
    order, cu_q, pos = query_rows_layout(CU, ROWS, 132)
    layout = (CU, cu_q, order.to(torch.int32), pos, 70, 20)

    def kernel(q, k, v):
        return _Tuned.apply(q[ROWS], k, v, layout, {kind: cfg})

    _assert_close(_grads(kernel, q, k, v, dout), _grads(_reference(**kw), q, k, v, dout), 2e-6, f"{kind} {cfg}")


class _Tuned(torch.autograd.Function):
    """The launchers with one given config (autotune={kind: config}), dropout 0.1 with seed 9 and ROW_IDS."""

    @staticmethod
    def forward(ctx, q, k, v, layout, tuned):
        kw = dict(dropout_p=0.1, seed=9, autotune=tuned, row_ids=ROW_IDS)
        out, lse = AR.attention_rows_forward(q, k, v, *layout, **kw)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.layout, ctx.kw = layout, kw
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        return (*AR.attention_rows_backward(dout, q, k, v, out, lse, *ctx.layout, **ctx.kw), None, None)


def test_custom_ops_and_torch_compile():
    q, k, v, dout = _inputs(2, 32, torch.float32, seed=4)
    order, cu_q, pos = query_rows_layout(CU, ROWS, 132)
    seed = torch.tensor([5])
    args = (q[ROWS], k, v, CU, cu_q, order.to(torch.int32), pos, 70, 70, 0.1, 0.2, seed, ROW_IDS)
    torch.library.opcheck(torch.ops.bertforge.attention_rows_fwd.default, args,
                          test_utils=("test_schema", "test_faketensor"))
    out, lse = torch.ops.bertforge.attention_rows_fwd(*args)
    torch.library.opcheck(torch.ops.bertforge.attention_rows_bwd.default,
                          (dout, q[ROWS], k, v, out, lse, *args[3:]), test_utils=("test_schema", "test_faketensor"))
    f = _kernel(max_seqlen=70, dropout_p=0.1, seed=seed, row_ids=ROW_IDS)
    got = _grads(torch.compile(f, backend="aot_eager", fullgraph=True), q, k, v, dout)
    for a, b in zip(got, _grads(f, q, k, v, dout)):
        assert torch.equal(a, b)


def test_ops_dispatches_triton_to_the_kernel():
    cpu = torch.device("cpu")
    assert ops.attention_rows_supported("triton", cpu, True)  # the interpreter runs the kernels on CPU tensors
    assert not ops.attention_rows_supported("triton", cpu, False)
    q, k, v, dout = _inputs(3, 32, torch.float32, seed=6)
    kw = dict(dropout_p=0.1, seed=torch.tensor([3]), row_ids=ROW_IDS)
    got = _grads(lambda q, k, v: ops.attention_rows(q[ROWS], k, v, cu_seqlens=CU, q_rows=ROWS, max_seqlen=70,
                                                    backend="triton", **kw), q, k, v, dout)
    _assert_close(got, _grads(_reference(**kw), q, k, v, dout), 2e-6, "ops triton")
    with pytest.raises(ConfigError, match="needs an unpadded batch"):
        ops.attention_rows(q[:2], k, v, cu_seqlens=None, q_rows=torch.tensor([0, 1]), backend="triton")
