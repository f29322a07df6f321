"""kernels/attention.py against its pure-torch reference: forward and dq/dk/dv for the padded (key-padding mask) and
unpadded (cu_seqlens) layouts, awkward lengths (1, odd, not block multiples, 0), head dims 32/64/128 and an odd one,
fp32/fp16 (+ bf16 once: the interpreter's bf16 dot is emulated in fp32), in-kernel dropout (statistics and exact
forward/backward against the reference fed the kernel's own keep mask), and the custom-op / torch.compile wiring.

Under the interpreter the 64-block configs apply: max_seqlen <= 64 runs the fused one-program backward, longer
sequences the dk/dv + dq kernels; the shapes below cover both."""
import math

import pytest
import torch
import triton
import triton.language as tl

from tests.kernels._kernel_tolerance import assert_within_noise, max_err
from bertforge.kernels._common import draw_seed_tensor
from bertforge.kernels.attention import _program_coords, attention
from bertforge.kernels.reference import attention_dropout_keep_ref, quantized_dropout_p
from bertforge.kernels.reference import attention_naive_ref


def _run(fn, q, k, v, dout, **kw):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v, **kw)
    out.backward(dout.to(out.dtype))
    return out.detach(), q.grad, k.grad, v.grad


def _inputs(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g).to(dtype) for _ in range(4)]  # q, k, v, dout


def _prefix_mask(lengths, seq):
    return torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None]  # (B, S)


def _check(kernel_res, lowp_res, exact_res, row_ok, what):
    """Compare (out, dq, dk, dv); outputs only on rows row_ok (B, S) or (total,) bool."""
    for name, o, t, e in zip(("out", "dq", "dk", "dv"), kernel_res, lowp_res, exact_res):
        assert torch.isfinite(o).all(), f"{what} {name} not finite"
        if name == "out":
            o, t, e = o[row_ok], t[row_ok], e[row_ok]
        assert_within_noise(o, t, e, name=f"{what} {name}")


def _compare_padded(q, k, v, dout, mask, **kw):
    """Kernel vs reference in q's dtype (noise) vs fp64 reference; dout is zero on padded query rows."""
    if mask is not None:
        dout = dout * mask[:, :, None, None].to(dout.dtype)
    res = _run(attention, q, k, v, dout, key_padding_mask=mask, **kw)
    lowp = _run(attention_naive_ref, q, k, v, dout, key_padding_mask=mask, **kw)
    exact = _run(attention_naive_ref, q.double(), k.double(), v.double(), dout.double(), key_padding_mask=mask, **kw)
    row_ok = mask if mask is not None else torch.ones(q.shape[:2], dtype=torch.bool)
    _check(res, lowp, exact, row_ok, f"padded {tuple(q.shape)} {q.dtype}")
    return res


# ---- padded layout -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("head_dim", [32, 64, 128])
@pytest.mark.parametrize("seq,lengths", [(40, [40, 17, 1]), (150, [150, 1, 129])])
def test_padded_matches_reference(dtype, head_dim, seq, lengths):
    q, k, v, dout = _inputs((len(lengths), seq, 3, head_dim), dtype, seed=seq + head_dim)
    mask = _prefix_mask(lengths, seq)
    out, dq, dk, dv = _compare_padded(q, k, v, dout, mask)
    pad = ~mask
    assert out[pad].abs().max() == 0 and dq[pad].abs().max() == 0  # padded query rows: zero output and dq
    assert dk[pad].abs().max() == 0 and dv[pad].abs().max() == 0  # padded keys: zero gradient


@pytest.mark.parametrize("seq", [1, 33, 97])
def test_padded_no_mask_batch_of_one(seq):
    q, k, v, dout = _inputs((1, seq, 2, 64), torch.float16, seed=seq)
    _compare_padded(q, k, v, dout, None, softmax_scale=0.3)


@pytest.mark.parametrize("seq", [48, 130])
def test_padded_arbitrary_mask(seq):
    """Left padding, holes and an all-padding row: the mask is loaded in-kernel, so any mask is exact."""
    g = torch.Generator().manual_seed(seq)
    mask = torch.rand(4, seq, generator=g) < 0.6  # random holes
    mask[1] = torch.arange(seq) >= seq - 5  # left padding
    mask[2] = False  # no real token at all
    mask[3, :] = True
    mask[3, :64] = False  # a fully masked first key block
    q, k, v, dout = _inputs((4, seq, 2, 32), torch.float32, seed=seq)
    out, dq, dk, dv = _compare_padded(q, k, v, dout, mask)
    assert out[2].abs().max() == 0 and dq[2].abs().max() == 0


def test_padded_random_padding_strided_qkv():
    """q, k, v as views of one packed (B, S, 3, nh, d) projection (non-contiguous, as the model produces them)."""
    g = torch.Generator().manual_seed(7)
    lengths = torch.randint(1, 71, (5,), generator=g).tolist()
    qkv = torch.randn(5, 71, 3, 2, 64, generator=g).half()
    dout = torch.randn(5, 71, 2, 64, generator=g).half()
    _compare_padded(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], dout, _prefix_mask(lengths, 71))


def test_bf16_and_odd_head_dim():
    q, k, v, dout = _inputs((2, 37, 2, 64), torch.bfloat16, seed=1)
    _compare_padded(q, k, v, dout, _prefix_mask([37, 20], 37))
    q, k, v, dout = _inputs((2, 37, 2, 48), torch.float16, seed=2)  # head dim padded to a 64-wide block
    _compare_padded(q, k, v, dout, _prefix_mask([5, 37], 37))


# ---- unpadded layout ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("lengths", [[1, 37, 64, 5], [65, 1, 0, 130, 17]])
def test_varlen_matches_reference(dtype, lengths):
    total, nh, d = sum(lengths), 3, 64
    q, k, v, dout = _inputs((total, nh, d), dtype, seed=total)
    cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32)
    kw = dict(cu_seqlens=cu, max_seqlen=max(lengths))
    res = _run(attention, q, k, v, dout, **kw)
    lowp = _run(attention_naive_ref, q, k, v, dout, **kw)
    exact = _run(attention_naive_ref, q.double(), k.double(), v.double(), dout.double(), **kw)
    _check(res, lowp, exact, torch.ones(total, dtype=torch.bool), f"varlen {lengths} {dtype}")


def test_varlen_equals_padded_and_max_seqlen_optional():
    lengths = [3, 70, 1]
    q, k, v, dout = _inputs((3, 70, 2, 32), torch.float32, seed=3)
    mask = _prefix_mask(lengths, 70)
    cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32)
    padded = _run(attention, q, k, v, dout * mask[:, :, None, None], key_padding_mask=mask)
    unpadded = _run(attention, q[mask], k[mask], v[mask], dout[mask], cu_seqlens=cu)  # max_seqlen computed
    for a, b in zip(padded, unpadded):
        torch.testing.assert_close(a[mask], b, atol=1e-6, rtol=1e-6)


def test_empty_inputs():
    q = torch.zeros(0, 2, 64, requires_grad=True)
    out = attention(q, q, q, cu_seqlens=torch.zeros(1, dtype=torch.int32), max_seqlen=0)
    assert out.shape == q.shape
    q = torch.randn(2, 5, 2, 64, requires_grad=True)
    out = attention(q, q, q, key_padding_mask=torch.zeros(2, 5, dtype=torch.bool))
    out.sum().backward()
    assert out.abs().max() == 0 and q.grad.abs().max() == 0


def test_bad_arguments():
    q = torch.randn(4, 2, 64)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    with pytest.raises(ValueError, match="not both"):
        attention(q, q, q, cu_seqlens=cu, key_padding_mask=torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="head_dim"):
        attention(torch.randn(4, 2, 160), torch.randn(4, 2, 160), torch.randn(4, 2, 160), cu_seqlens=cu)
    with pytest.raises(ValueError, match="padded q"):
        attention(q, q, q)
    with pytest.raises(ValueError, match=r"max_seqlen=3 is below the longest sequence \(4\)"):
        attention(q, q, q, cu_seqlens=cu, max_seqlen=3)  # a smaller bound can leave blocks out


# ---- dropout -----------------------------------------------------------------------------------------------------
def dropout_keep_mask(seed, batch, nheads, seq, p, row_ids=None):
    """The kernels' keep mask (B, nh, S, S), replayed by the pure-torch Philox of bertforge.kernels.reference."""
    return attention_dropout_keep_ref(seed, batch, nheads, seq, p, row_ids)


def test_dropout_mask_statistics():
    """Keep rate 1 - p_q (the quantised p, 8-bit thresholds by default) within 5 sigma; independent heads."""
    p0, b, nh, s = 0.1, 2, 4, 128
    keep = dropout_keep_mask(1234, b, nh, s, p0)
    p = quantized_dropout_p(p0)
    n = keep.numel()
    rate = keep.double().mean().item()
    assert abs(rate - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n), rate  # binomial, 5 sigma
    assert torch.equal(keep, dropout_keep_mask(1234, b, nh, s, p0))  # a pure function of the seed
    other = dropout_keep_mask(1235, b, nh, s, p0)
    assert (keep != other).double().mean().item() > 0.1
    flat = keep.view(b * nh, s * s).double()  # heads/batches independent: pairwise agreement ~ p^2 + (1-p)^2
    agree = (flat[:, None] == flat[None]).double().mean(-1)
    off = agree[~torch.eye(b * nh, dtype=torch.bool)]
    assert (off - (p * p + (1 - p) ** 2)).abs().max() < 0.01
    cols = keep.double().mean(dim=(0, 1, 2))  # every column (byte of a Philox call's 16) at the same rate
    assert (cols - (1 - p)).abs().max() < 5 * math.sqrt(p * (1 - p) / (b * nh * s))


def test_dropout_preserves_the_mean():
    """q = 0 (uniform attention) and v = 1: out = kept / (L (1 - p_q)) per row; its mean over rows stays 1."""
    p, b, s, nh = 0.1, 3, 100, 4
    q = torch.zeros(b, s, nh, 32)
    v = torch.ones(b, s, nh, 32)
    torch.manual_seed(0)
    out = attention(q, q, v, dropout_p=p)[..., 0]  # (B, S, nh)
    n = out.numel() * s  # every output row averages s Bernoulli draws
    assert abs(out.mean().item() - 1) < 5 * math.sqrt(p / (1 - p) / n)
    assert out.std() > 0.01  # dropout really happened
    assert torch.equal(attention(q, q, v, dropout_p=0.0)[..., 0], torch.ones_like(out))


@pytest.mark.parametrize("layout", ["padded", "varlen"])
@pytest.mark.parametrize("lengths", [[40, 9, 1], [100, 67]])
def test_dropout_forward_backward_exact(layout, lengths):
    """The kernel's dropout equals the reference fed dropout_keep_mask for the seed torch's generator handed out,
    in the forward and all three gradients (fused backward for <= 64, dk/dv + dq kernels beyond)."""
    p, nh, d, seq = 0.15, 2, 64, max(lengths)  # applied as 38/256
    q, k, v, dout = _inputs((len(lengths), seq, nh, d), torch.float32, seed=seq)
    mask = _prefix_mask(lengths, seq)
    dout = dout * mask[:, :, None, None]
    torch.manual_seed(11)
    seed = int(draw_seed_tensor("cpu"))
    keep = dropout_keep_mask(seed, len(lengths), nh, seq, p)
    if layout == "padded":
        kw = dict(key_padding_mask=mask)
        q, k, v, dout = (t.clone() for t in (q, k, v, dout))
        sel = mask
    else:
        kw = dict(cu_seqlens=torch.tensor([0] + lengths).cumsum(0).to(torch.int32), max_seqlen=seq)
        q, k, v, dout = q[mask], k[mask], v[mask], dout[mask]
        sel = torch.ones(q.shape[0], dtype=torch.bool)
    torch.manual_seed(11)
    res = _run(attention, q, k, v, dout, dropout_p=p, **kw)
    exact = _run(attention_naive_ref, q.double(), k.double(), v.double(), dout.double(), dropout_p=p,
                 dropout_mask=keep, **kw)
    lowp = _run(attention_naive_ref, q, k, v, dout, dropout_p=p, dropout_mask=keep, **kw)
    _check(res, lowp, exact, sel, f"dropout {layout} {lengths}")
    torch.manual_seed(12)
    other = _run(attention, q, k, v, dout, dropout_p=p, **kw)[0]
    assert max_err(other[sel], res[0][sel]) > 1e-2  # a new seed, a new mask


def test_dropout_fp16():
    lengths = [50, 23]
    q, k, v, dout = _inputs((2, 50, 2, 32), torch.float16, seed=5)
    mask = _prefix_mask(lengths, 50)
    dout = dout * mask[:, :, None, None]
    torch.manual_seed(3)
    keep = dropout_keep_mask(int(draw_seed_tensor("cpu")), 2, 2, 50, 0.1)
    torch.manual_seed(3)
    res = _run(attention, q, k, v, dout, key_padding_mask=mask, dropout_p=0.1)
    kw = dict(key_padding_mask=mask, dropout_p=0.1, dropout_mask=keep)
    _check(res, _run(attention_naive_ref, q, k, v, dout, **kw),
           _run(attention_naive_ref, q.double(), k.double(), v.double(), dout.double(), **kw), mask, "dropout fp16")


# ---- custom op / torch.compile -----------------------------------------------------------------------------------
def test_custom_op_opcheck():
    q, k, v, _ = _inputs((2, 20, 2, 32), torch.float32, seed=9)
    mask = _prefix_mask([20, 7], 20)
    seed = torch.tensor([5])
    torch.library.opcheck(torch.ops.bertforge.attention_fwd.default, (q, k, v, mask, None, 20, 0.1, 0.2, seed, None),
                          test_utils=("test_schema", "test_faketensor"))
    cu = torch.tensor([0, 20, 27], dtype=torch.int32)
    out, lse = torch.ops.bertforge.attention_fwd(q[mask], k[mask], v[mask], None, cu, 20, 0.1, 0.2, seed, None)
    torch.library.opcheck(torch.ops.bertforge.attention_bwd.default,
                          (torch.randn_like(out), q[mask], k[mask], v[mask], out, lse, seed, None, None, cu, 20, 0.1,
                           0.2), test_utils=("test_schema", "test_faketensor"))


def test_torch_compile_traces_without_graph_breaks():
    q, k, v, dout = _inputs((2, 24, 2, 32), torch.float32, seed=4)
    mask = _prefix_mask([24, 11], 24)
    dout = dout * mask[:, :, None, None]

    def f(q, k, v):
        return attention(q, k, v, key_padding_mask=mask, dropout_p=0.1)

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    torch.manual_seed(5)
    got = _run(lambda q, k, v: compiled(q, k, v), q, k, v, dout)
    torch.manual_seed(5)
    want = _run(lambda q, k, v: f(q, k, v), q, k, v, dout)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("layout", ["padded", "varlen"])
def test_dq_atomic_matches_split(layout):
    """The long-sequence backward's two dq strategies (fp32 atomics in the dk/dv kernel vs the dq kernel) agree."""
    from bertforge.kernels.attention import attention_backward, attention_forward

    lengths, p = [150, 1, 77], 0.1
    q, k, v, dout = _inputs((3, 150, 2, 64), torch.float32, seed=21)
    mask = _prefix_mask(lengths, 150)
    if layout == "padded":
        kw = dict(key_padding_mask=mask)
    else:
        kw = dict(cu_seqlens=torch.tensor([0] + lengths).cumsum(0).to(torch.int32), max_seqlen=150)
        q, k, v, dout = q[mask], k[mask], v[mask], dout[mask]
    out, lse = attention_forward(q, k, v, dropout_p=p, seed=77, **kw)
    split = attention_backward(dout, q, k, v, out, lse, dropout_p=p, seed=77, dq_atomic=False, **kw)
    atomic = attention_backward(dout, q, k, v, out, lse, dropout_p=p, seed=77, dq_atomic=True, **kw)
    for a, b in zip(split, atomic):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-5)


def test_dropout_row_ids_give_each_sequence_its_own_stream():
    """Default row ids are the sequence indices; with explicit ids (past 2^32 too) a sequence's mask, forward and
    backward, follows its id and not its place in the batch: what per-sample seeding passes in."""
    lengths = [37, 20, 29]
    q, k, v, dout = _inputs((3, 37, 2, 32), torch.float32, seed=21)
    cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32)
    mask = _prefix_mask(lengths, 37)
    q, k, v, dout = q[mask], k[mask], v[mask], dout[mask]
    seed = torch.tensor([77])
    kw = dict(cu_seqlens=cu, max_seqlen=37, dropout_p=0.2, seed=seed)
    base = _run(attention, q, k, v, dout, **kw)
    for a, b in zip(base, _run(attention, q, k, v, dout, row_ids=torch.arange(3), **kw)):
        assert torch.equal(a, b)
    ids = torch.tensor([2**40 + 1, 5, 2**33])
    got = _run(attention, q, k, v, dout, row_ids=ids, **kw)
    keep = dropout_keep_mask(77, 3, 2, 37, 0.2, row_ids=ids)
    ref = _run(attention_naive_ref, q, k, v, dout, cu_seqlens=cu, max_seqlen=37, dropout_p=0.2, dropout_mask=keep)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)
    # the same three sequences in another order, with their ids: each sequence's results move with it
    order = [2, 0, 1]
    parts = [slice(int(cu[i]), int(cu[i + 1])) for i in range(3)]
    perm = torch.cat([torch.arange(parts[i].start, parts[i].stop) for i in order])
    cu2 = torch.tensor([0] + [lengths[i] for i in order]).cumsum(0).to(torch.int32)
    moved = _run(attention, q[perm], k[perm], v[perm], dout[perm], cu_seqlens=cu2, max_seqlen=37, dropout_p=0.2,
                 seed=seed, row_ids=ids[order])
    for a, b in zip(got, moved):
        assert torch.equal(a[perm], b)


@pytest.mark.parametrize("layout", ["padded", "varlen"])
def test_reference_with_a_seed_draws_the_kernels_mask(layout):
    """The CPU path (bertforge.kernels.reference.attention_ref) given the kernel's seed and row ids drops the same
    probabilities as the kernel: forward and gradients agree to fp32 rounding, so kernels on and off train alike."""
    from bertforge.kernels.reference import attention_ref

    lengths = [37, 20, 29]
    q, k, v, dout = _inputs((3, 37, 2, 32), torch.float32, seed=5)
    mask = _prefix_mask(lengths, 37)
    kw = dict(dropout_p=0.2, seed=torch.tensor([77]), row_ids=torch.tensor([2**40 + 1, 5, 2**33]))
    if layout == "padded":
        kw.update(key_padding_mask=mask)
        dout = dout * mask[:, :, None, None]  # padded query rows: zero in the kernel, attended in the reference
    else:
        kw.update(cu_seqlens=torch.tensor([0] + lengths).cumsum(0).to(torch.int32), max_seqlen=37)
        q, k, v, dout = q[mask], k[mask], v[mask], dout[mask]
    got = _run(attention, q, k, v, dout, **kw)
    ref = _run(attention_ref, q, k, v, dout, **kw)
    rows = mask if layout == "padded" else slice(None)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, ref):
        a, b = (a[rows], b[rows]) if name in ("out", "dq") else (a, b)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)
    plain = _run(attention, q, k, v, dout, **dict(kw, row_ids=None))
    assert not torch.allclose(plain[0], got[0])  # the row ids select the streams


def test_launch_grid_is_one_axis_within_cuda_limits():
    """Axes 1 and 2 of a CUDA grid hold 65,535 programs: BERT-large (16 heads) at B = 4096 was 65,536 (batch x heads)
    on axis 1. The 1-D grid holds it; past 2^31 - 1 programs the launcher says so."""
    from bertforge.kernels.attention import launch_grid

    assert launch_grid(triton.cdiv(512, 64), 4096, 16) == (8 * 4096 * 16,)
    assert launch_grid(1, 65536, 16) == (1 << 20,)
    with pytest.raises(ValueError, match="2\\^31"):
        launch_grid(1 << 12, 1 << 15, 16)


@triton.jit
def _coords_probe_kernel(PID_ptr, OUT_ptr, n, max_seqlen, nheads, BLOCK: tl.constexpr):
    i = tl.arange(0, 64)
    pid = tl.load(PID_ptr + i, mask=i < n, other=0)
    blk, b, h = _program_coords(pid, max_seqlen, nheads, BLOCK)
    tl.store(OUT_ptr + 3 * i, blk, mask=i < n)
    tl.store(OUT_ptr + 3 * i + 1, b, mask=i < n)
    tl.store(OUT_ptr + 3 * i + 2, h, mask=i < n)


@pytest.mark.parametrize("max_seqlen,batch,nheads", [(130, 3, 5), (512, 65536, 16)])
def test_program_coords_cover_every_block_once(max_seqlen, batch, nheads):
    """The kernels' decoding of the 1-D program id, run on chosen ids (the first and last programs of a grid of
    2^19 programs for BERT-large at B = 65,536) instead of launching them."""
    block = 64
    n_blocks = triton.cdiv(max_seqlen, block)
    total = launch_grid_size = n_blocks * batch * nheads
    pids = torch.arange(total) if total <= 64 else torch.cat([torch.arange(32), total - 32 + torch.arange(32)])
    out = torch.empty(len(pids), 3, dtype=torch.int32)
    _coords_probe_kernel[(1,)](pids.to(torch.int32), out, len(pids), max_seqlen, nheads, BLOCK=block)
    want = torch.stack([pids % n_blocks, pids // n_blocks // nheads, pids // n_blocks % nheads], 1)
    assert torch.equal(out.long(), want)
    assert out[:, 1].max() < batch and launch_grid_size == total


# ---- every GPU autotune config -----------------------------------------------------------------------------------
def _gpu_config_cases():
    from bertforge.kernels.attention import GPU_CONFIGS

    for kind, configs in GPU_CONFIGS.items():
        for cfg in configs:
            yield pytest.param(kind, cfg, id=f"{kind}-{cfg.num_warps}w-" + "x".join(map(str, cfg.kwargs.values())))


@pytest.mark.parametrize("kind,cfg", list(_gpu_config_cases()))
def test_every_gpu_autotune_config_matches_the_reference(kind, cfg, monkeypatch):
    """Autotune may pick any config of the GPU lists: each one's block shapes (the interpreter ignores warps and
    stages) gives the reference's output and gradients, with a padding mask and dropout, on sequences that are not
    block multiples (fused backward: up to one 128-key block as on the GPU; split: 150 keys)."""
    import bertforge.kernels.attention as A

    monkeypatch.setattr(A, "_FUSED_MAX_SEQLEN", A.GPU_FUSED_MAX_SEQLEN)
    seq = 100 if kind in ("fwd", "bwd_fused") else 150
    lengths = [seq, 1, seq - 37]
    q, k, v, dout = _inputs((3, seq, 2, 64), torch.float16, seed=seq)  # fp16: errors are rounding, not summation order
    mask = _prefix_mask(lengths, seq)
    dout = dout * mask[:, :, None, None]
    p = 0.1
    keep = dropout_keep_mask(9, 3, 2, seq, p)
    tuned = {kind: cfg}

    def kernel(q, k, v, dout):
        out, lse = A.attention_forward(q, k, v, mask, dropout_p=p, seed=9, autotune=tuned)
        return [out, *A.attention_backward(dout, q, k, v, out, lse, mask, dropout_p=p, seed=9, autotune=tuned)]

    res = kernel(q, k, v, dout)
    kw = dict(key_padding_mask=mask, dropout_p=p, dropout_mask=keep)
    lowp = _run(attention_naive_ref, q, k, v, dout, **kw)
    exact = _run(attention_naive_ref, q.double(), k.double(), v.double(), dout.double(), **kw)
    _check(res, lowp, exact, mask, f"{kind} {cfg}")
