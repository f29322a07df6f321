"""The CPU path's unpadded attention (bertforge.kernels.reference.attention_varlen_ref, one sequence at a time, no
re-padding) against the padded path it replaces (the same sequences padded to max_seqlen, masked SDPA or the naive
attention) and an fp64 oracle: forward and dq/dk/dv on awkward lengths (0, 1, odd, the longest), strided q/k/v views
of one packed QKV buffer, without and with the kernels' Philox dropout mask. Pure torch (no Triton)."""
import pytest
import torch

from bertforge.kernels import reference
from bertforge.kernels.reference import attention_naive_ref, attention_ref, attention_varlen_ref

LENGTHS = [5, 1, 0, 37, 20]  # an empty segment (packed batches list padding segments too) and a one-token one


def _packed(lengths, nh=3, d=16, dtype=torch.float32, seed=0):
    """q, k, v strided views of one (total, 3, nh, d) buffer (the model's fused QKV), dout, cu_seqlens."""
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    qkv = torch.randn(total, 3, nh, d, generator=g).to(dtype)
    dout = torch.randn(total, nh, d, generator=g).to(dtype)
    cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32)
    return qkv, dout, cu


def _run(fn, qkv, dout, **kw):
    qkv = qkv.detach().clone().requires_grad_()
    out = fn(*qkv.unbind(1), **kw)
    out.backward(dout.to(out.dtype))
    return out.detach(), qkv.grad


@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_per_sequence_equals_padded_and_fp64(monkeypatch, dropout):
    qkv, dout, cu = _packed(LENGTHS)
    kw = dict(cu_seqlens=cu, max_seqlen=max(LENGTHS), dropout_p=dropout)
    if dropout:
        kw.update(seed=torch.tensor([77]), row_ids=torch.tensor([3, 2**40 + 1, 9, 5, 2**33]))
    got = _run(attention_ref, qkv, dout, **kw)
    direct = _run(attention_varlen_ref, qkv, dout, **{k: v for k, v in kw.items() if k != "max_seqlen"})
    assert all(torch.equal(a, b) for a, b in zip(got, direct))  # attention_ref takes this path on CPU
    monkeypatch.setattr(reference, "VARLEN_PER_SEQUENCE_ON_CPU", False)
    padded = _run(attention_ref, qkv, dout, **kw)
    keep = None
    if dropout:
        keep = reference.attention_dropout_keep_ref(77, len(LENGTHS), 3, max(LENGTHS), dropout, kw["row_ids"])
    exact = _run(attention_naive_ref, qkv.double(), dout.double(), cu_seqlens=cu, max_seqlen=max(LENGTHS),
                 dropout_p=dropout, dropout_mask=keep)
    for name, a, b, e in zip(("out", "dqkv"), got, padded, exact):
        # fp32 against the fp64 oracle: both paths within the same rounding (measured max 5e-7 for either here)
        torch.testing.assert_close(a, e.float(), rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    if dropout:
        plain = _run(attention_ref, qkv, dout, cu_seqlens=cu, max_seqlen=max(LENGTHS))
        assert not torch.allclose(plain[0], got[0])  # the mask was applied


def test_each_sequence_attends_only_to_itself():
    """Moving a sequence to another place in the batch moves its output rows, unchanged (no leakage across
    sequences), and a batch of one equals unbatched SDPA."""
    qkv, dout, cu = _packed([7, 12, 4])
    out = attention_varlen_ref(*qkv.unbind(1), cu)
    order = [2, 0, 1]
    parts = [torch.arange(int(cu[i]), int(cu[i + 1])) for i in range(3)]
    perm = torch.cat([parts[i] for i in order])
    cu2 = torch.tensor([0] + [[7, 12, 4][i] for i in order]).cumsum(0).to(torch.int32)
    moved = attention_varlen_ref(*qkv[perm].unbind(1), cu2)
    torch.testing.assert_close(moved, out[perm], rtol=1e-6, atol=1e-6)
    q, k, v = (t[:7].transpose(0, 1)[None] for t in qkv.unbind(1))
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v)[0].transpose(0, 1)
    torch.testing.assert_close(out[:7], sdpa, rtol=1e-5, atol=1e-6)


def test_bf16_and_torch_dropout():
    """bf16 inputs: softmax in fp32, output within bf16 rounding of the fp32 result. Torch-drawn dropout (no seed)
    keeps the expectation: the mean output over many draws approaches the no-dropout output."""
    qkv, dout, cu = _packed([9, 30])
    ref32 = attention_varlen_ref(*qkv.unbind(1), cu)
    got = attention_varlen_ref(*qkv.bfloat16().unbind(1), cu)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), ref32, rtol=0.05, atol=0.03)
    torch.manual_seed(0)
    mean = sum(attention_varlen_ref(*qkv.unbind(1), cu, dropout_p=0.3) for _ in range(400)) / 400
    assert (mean - ref32).abs().mean() < 0.03 < (attention_varlen_ref(*qkv.unbind(1), cu, dropout_p=0.3)
                                                 - ref32).abs().mean()


@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_bf16_gradients_within_twice_the_padded_paths_error(monkeypatch, dropout):
    """bf16 forward and dq/dk/dv of the per-sequence path (its hand-written backward) against the fp64 oracle: within
    twice the error of the padded path (masked SDPA or the naive attention, autograd) in bf16 on the same inputs."""
    qkv, dout, cu = _packed(LENGTHS, dtype=torch.bfloat16, seed=3)
    kw = dict(cu_seqlens=cu, max_seqlen=max(LENGTHS), dropout_p=dropout)
    keep = None
    if dropout:
        kw.update(seed=torch.tensor([5]), row_ids=torch.tensor([1, 2, 3, 4, 2**45]))
        keep = reference.attention_dropout_keep_ref(5, len(LENGTHS), 3, max(LENGTHS), dropout, kw["row_ids"])
    got = _run(attention_ref, qkv, dout, **kw)
    monkeypatch.setattr(reference, "VARLEN_PER_SEQUENCE_ON_CPU", False)
    padded = _run(attention_ref, qkv, dout, **kw)
    exact = _run(attention_naive_ref, qkv.double(), dout.double(), cu_seqlens=cu, max_seqlen=max(LENGTHS),
                 dropout_p=dropout, dropout_mask=keep)
    for name, a, b, e in zip(("out", "dqkv"), got, padded, exact):
        assert a.dtype == torch.bfloat16, name
        err, noise = (a.double() - e).abs().max().item(), (b.double() - e).abs().max().item()
        assert err <= 2 * noise + 1e-3, (name, err, noise)
