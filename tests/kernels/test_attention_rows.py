"""kernels/reference.py `attention_varlen_rows_ref` (the CPU path's attention for some query rows only, the last
layer of pretraining): each row equals `attention_varlen_ref`'s at its token, with the same dropout elements, and so
do the gradients of q's rows, k and v; queries in any order, a sequence without queries, a sequence of one token;
fp32 to rounding, bf16 within 2x the full path's own error against fp32. ops.attention_rows refuses padded batches
and kernels='none' off the CPU path in one line (kernels='triton': tests/kernels/test_attention_rows_triton.py)."""
import pytest
import torch

from bertforge import ops
from bertforge.errors import ConfigError
from bertforge.kernels import reference as R

LENGTHS = [17, 1, 33, 5]
CU = torch.tensor([0, 17, 18, 51, 56], dtype=torch.int32)
ROWS = torch.tensor([40, 3, 0, 17, 50, 20, 16])  # sequence 3 (tokens 51-55) has none; sequence 1 is token 17


@pytest.fixture(params=["torch Philox", "C++ Philox"], autouse=True)
def _philox(request):
    """Both mask paths: the torch replay and the registered C++ rows (bertforge.parallelize.apply_native_cpu)."""
    saved = R._NATIVE
    if request.param == "torch Philox":
        R.use_native_philox(None)
    else:
        from bertforge.parallelize import apply_native_cpu

        apply_native_cpu()
    yield
    R._NATIVE = saved


def _run(fn, dtype, dropout, seed):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(56, 3, 8, generator=g).to(dtype).requires_grad_() for _ in range(3))
    go = torch.randn(len(ROWS), 3, 8, generator=g).to(dtype)
    kw = dict(dropout_p=dropout, seed=seed, row_ids=torch.tensor([9, 2**40, 3, 4]) if seed is not None else None)
    out = fn(q, k, v, **kw)
    out.backward(go)
    return out.detach().float(), q.grad[ROWS].float(), k.grad.float(), v.grad.float()


def _full(q, k, v, **kw):
    return R.attention_varlen_ref(q, k, v, CU, **kw)[ROWS]


def _rows(q, k, v, **kw):
    return R.attention_varlen_rows_ref(q[ROWS], k, v, CU, ROWS, **kw)


@pytest.mark.parametrize("dropout,keyed", [(0.0, False), (0.25, True)])
def test_rows_equal_the_full_attention_at_their_tokens(dropout, keyed):
    seed = torch.tensor([77]) if keyed else None
    full = _run(_full, torch.float32, dropout, seed)
    rows = _run(_rows, torch.float32, dropout, seed)
    for a, b in zip(full, rows):
        assert (a - b).abs().max().item() <= 1e-6
    assert rows[2][51:].abs().max().item() == 0.0  # no query in sequence 3: no key gradient there
    if keyed:  # the mask is on: the outputs differ from the undropped ones
        assert (rows[0] - _run(_rows, torch.float32, 0.0, None)[0]).abs().max().item() > 1e-2


def test_bf16_within_the_full_paths_error():
    seed = torch.tensor([5])
    exact = _run(_full, torch.float32, 0.25, seed)
    full = _run(_full, torch.bfloat16, 0.25, seed)
    rows = _run(_rows, torch.bfloat16, 0.25, seed)
    for e, f, r in zip(exact, full, rows):
        assert (r - e).abs().max().item() <= 2 * (f - e).abs().max().item() + 1e-3


def test_unkeyed_dropout_draws_and_scales():
    torch.manual_seed(0)
    out = _run(_rows, torch.float32, 0.5, None)[0]
    assert torch.isfinite(out).all() and (out - _run(_rows, torch.float32, 0.0, None)[0]).abs().max() > 1e-2


def test_bad_rows_and_unserved_layouts_refused():
    q = torch.zeros(2, 3, 8)
    kv = torch.zeros(56, 3, 8)
    with pytest.raises(ValueError, match=r"q_rows must be \(2,\) token indices in \[0, 56\)"):
        R.attention_varlen_rows_ref(q, kv, kv, CU, torch.tensor([0, 56]))
    with pytest.raises(ValueError, match=r"q_rows must be int64 or int32 token indices, got torch\.bool"):
        R.attention_varlen_rows_ref(q, kv, kv, CU, torch.tensor([True, False]))
    assert not ops.attention_rows_supported("none", torch.device("cpu"), False)
    assert not ops.attention_rows_supported("triton", torch.device("cpu"), False)
    assert not ops.attention_rows_supported("none", torch.device("meta"), True)
    with pytest.raises(ConfigError, match="needs an unpadded batch and kernels='none' on CPU"):
        ops.attention_rows(q, kv, kv, cu_seqlens=None, q_rows=torch.tensor([0, 1]), backend="none")


def test_query_rows_switch_off_everywhere(monkeypatch):
    """ops.QUERY_ROWS = False (the benchmarks' `ours-all-queries` row): no backend serves query rows, so the model
    computes every query and selects the rows."""
    assert ops.attention_rows_supported("none", torch.device("cpu"), True)
    assert ops.attention_rows_supported("triton", torch.device("cuda"), True)
    monkeypatch.setattr(ops, "QUERY_ROWS", False)
    assert not ops.attention_rows_supported("none", torch.device("cpu"), True)
    assert not ops.attention_rows_supported("triton", torch.device("cuda"), True)
