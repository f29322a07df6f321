"""GPU check of the fused attention for benchmarks/gpu_check.sh.

1. bf16 correctness of the output and dq / dk / dv against bertforge.kernels.reference.attention_naive_ref (the rule of
   tests/kernels: kernel error vs an fp64 reference at most 2x plain torch's bf16 error, plus one ulp), outputs on
   real rows only: padded layout with prefix masks, an arbitrary (holes / left padding) mask and no mask; unpadded
   layout; d = 64 only on the GPU (BERT-base's and -large's head size: the time goes to what pretraining runs);
   short sequences (fused one-program backward) and long ones (dk/dv + dq kernels). Run with autotune=False
   (first config of each list) so it spends seconds, not minutes, compiling.
2. Dropout: keep rate of the in-kernel Philox mask, and forward + all gradients with dropout 0.1 against the
   reference fed the kernel's own keep mask (padded S = 128 and unpadded S = 512).
3. Every config of the GPU autotune lists, and autotune's pick, at B256/S128 and B64/S512 (bf16, random padding,
   dropout 0.1) against the reference fed the kernel's mask.
4. torch.compile(fullgraph=True, backend='aot_eager') traces through the custom ops.
5. The attention for a subset of query rows (kernels/attention_rows.py, the last layer of pretraining): bf16 output,
   dq, dk, dv with dropout 0.1 against the fp64 reference's rows (the rule of 1.), ~20 rows a sequence, one
   sequence without rows; and its time (first configs: no tuning time) against the full varlen attention
   (autotuned) at B256/S128 (bench_attention.bench_query_rows).
6. bench_attention at the target shapes (autotuned): vs SDPA with and without padding, S = 512 again with the
   atomic-dq backward, and everything again with dropout 0.1.
Prints each check's row as it finishes (appended to attention_rows.jsonl), then the benchmark table; writes
attention_check.json and attention_bench.json under --out. Designed for < 60 s on H100/H200.
Without a GPU it runs the same code on small shapes under TRITON_INTERPRET=1 (a smoke test of the script itself, in
CI; the interpreter truncates bf16, so its error ratios are pessimistic and only reported).
Usage: python benchmarks/gpu_check_attention.py --out DIR
"""
from __future__ import annotations

import argparse
import math
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_attention  # noqa: E402
from _check_report import RowLog, report  # noqa: E402

from bertforge.kernels import attention as A  # noqa: E402
from bertforge.kernels._common import draw_seed_tensor  # noqa: E402
from bertforge.kernels.attention import attention  # noqa: E402
from bertforge.kernels.attention_rows import attention_rows  # noqa: E402
from bertforge.kernels.reference import attention_dropout_keep_ref as dropout_keep_mask  # noqa: E402
from bertforge.kernels.reference import attention_naive_ref  # noqa: E402

GPU = torch.cuda.is_available()
DEV = "cuda" if GPU else "cpu"
# (layout, head_dim, S, B, nh, dropout_p[, dq_atomic]): padded / holes / nomask use (B, S, nh, d), varlen the
# real tokens of the same batch
GPU_CASES = [
    ("padded", 64, 128, 8, 4, 0.0), ("padded", 64, 300, 4, 4, 0.0),
    ("varlen", 64, 128, 8, 4, 0.0), ("varlen", 64, 512, 4, 4, 0.0),
    ("nomask", 64, 77, 3, 4, 0.0), ("holes", 64, 200, 4, 4, 0.0),
    ("padded", 64, 128, 8, 4, 0.1), ("varlen", 64, 512, 4, 4, 0.1), ("padded", 64, 300, 4, 4, 0.1, True),
]  # a 7th field True: the atomic-dq backward
SMOKE_CASES = [  # interpreter blocks are 64: S = 70 takes the split (dk/dv + dq) backward
    ("padded", 32, 40, 2, 2, 0.0), ("varlen", 32, 70, 2, 2, 0.0), ("nomask", 32, 33, 2, 2, 0.0),
    ("holes", 32, 40, 2, 2, 0.0), ("padded", 32, 40, 2, 2, 0.1), ("padded", 32, 70, 2, 2, 0.1, True),
]
CASES = GPU_CASES if GPU else SMOKE_CASES


def _err(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def _run(fn, q, k, v, dout, **kw):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v, **kw)
    out.backward(dout.to(out.dtype))
    return [out.detach(), q.grad, k.grad, v.grad]


def check_case(layout, d, seq, batch, nh, p, dq_atomic=False):
    g = torch.Generator().manual_seed(seq * d + batch)
    lengths = torch.randint(1, seq + 1, (batch,), generator=g)
    lengths[0], lengths[-1] = seq, 1
    mask = torch.arange(seq)[None, :] < lengths[:, None]
    if layout == "holes":
        mask = torch.rand(batch, seq, generator=g) < 0.7
        mask[0] = torch.arange(seq) >= seq // 2  # left padding
    q, k, v, dout = (torch.randn(batch, seq, nh, d, generator=g).to(DEV, torch.bfloat16) for _ in range(4))
    mask = mask.to(DEV)
    dout = dout * mask[:, :, None, None]
    kw, rows_ok = dict(key_padding_mask=mask), mask
    if layout == "nomask":
        kw, rows_ok = dict(), torch.ones_like(mask)
    elif layout == "varlen":
        kw = dict(cu_seqlens=torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(DEV, torch.int32), max_seqlen=seq)
        q, k, v, dout = q[mask], k[mask], v[mask], dout[mask]
        rows_ok = torch.ones(q.shape[0], dtype=torch.bool, device=DEV)
    ref_kw = dict(kw)
    if p > 0:
        torch.manual_seed(1)
        ref_kw.update(dropout_p=p, dropout_mask=dropout_keep_mask(int(draw_seed_tensor(DEV)), batch, nh, seq, p,
                                                                  device=DEV))
        torch.manual_seed(1)  # the kernel draws the same seed
    outs = _run(attention, q, k, v, dout, dropout_p=p, autotune=False, dq_atomic=dq_atomic, **kw)
    lowp = _run(attention_naive_ref, q, k, v, dout, **ref_kw)
    exact = _run(attention_naive_ref, q.double(), k.double(), v.double(), dout.double(), **ref_kw)
    rows = []
    for name, o, t, e in zip(("out", "dq", "dk", "dv"), outs, lowp, exact):
        finite = bool(torch.isfinite(o).all())
        if name == "out":
            o, t, e = o[rows_ok], t[rows_ok], e[rows_ok]
        ek, et = _err(o, e), _err(t, e)
        floor = torch.finfo(o.dtype).eps * max(1.0, e.abs().max().item() if e.numel() else 0.0)
        what = f"{layout} d={d} S={seq} B={batch} p={p}{' atomic' * dq_atomic} {name}"
        rows.append(dict(check=what, err_kernel=ek, err_torch=et,
                         ok=finite and ek <= 2.0 * et + floor))
    return rows


def check_dropout_rate():
    from bertforge.kernels.reference import quantized_dropout_p

    p0, b, nh, s = (0.1, 8, 12, 512) if GPU else (0.1, 2, 2, 64)
    keep = dropout_keep_mask(1234, b, nh, s, p0, device=DEV)
    p = quantized_dropout_p(p0)  # the probability applied: 26/256 at 8-bit thresholds
    rate = keep.double().mean().item()
    bound = 5 * math.sqrt(p * (1 - p) / keep.numel())
    return [dict(check=f"dropout keep rate p={p0} (applied {p}) (B,nh,S,S)={tuple(keep.shape)}", value=rate,
                 ok=abs(rate - (1 - p)) < bound)]


CONFIG_SHAPES = [(256, 128), (64, 512)] if GPU else [(2, 70)]  # (B, S): pretraining phases 1 and 2; CPU: split


def check_every_config():
    """Every config of the GPU lists (and autotune's own pick) at the training shapes, bf16, BERT-base heads, random
    padding and dropout 0.1, against the reference fed the kernel's mask: autotune may pick any of them."""
    nh, d, p = (12, 64, 0.1) if GPU else (1, 64, 0.1)
    rows = []
    for batch, seq in CONFIG_SHAPES:
        g = torch.Generator().manual_seed(batch + seq)
        lengths = torch.randint(seq // 4, seq + 1, (batch,), generator=g)
        lengths[0] = seq
        mask = (torch.arange(seq)[None, :] < lengths[:, None]).to(DEV)
        q, k, v, dout = (torch.randn(batch, seq, nh, d, generator=g).to(DEV, torch.bfloat16) for _ in range(4))
        dout = dout * mask[:, :, None, None]
        keep = dropout_keep_mask(5, batch, nh, seq, p, device=DEV)
        kw = dict(key_padding_mask=mask, dropout_p=p, dropout_mask=keep)
        lowp = _run(attention_naive_ref, q, k, v, dout, **kw)
        exact = _run(attention_naive_ref, q.float(), k.float(), v.float(), dout.float(), **kw)  # fp64: too big here
        fused = seq <= A._FUSED_MAX_SEQLEN[64]
        kinds = ["fwd", "bwd_fused"] if fused else ["fwd", "bwd_dkdv", "bwd_dq"]
        choices = [("autotune", True)] + [(f"{kind} {c}", {kind: c}) for kind in kinds for c in A.GPU_CONFIGS[kind]]
        for what, tuned in choices:
            out, lse = A.attention_forward(q, k, v, mask, dropout_p=p, seed=5, autotune=tuned)
            grads = A.attention_backward(dout, q, k, v, out, lse, mask, dropout_p=p, seed=5, autotune=tuned)
            for name, o, t, e in zip(("out", "dq", "dk", "dv"), (out, *grads), lowp, exact):
                if name == "out":
                    o, t, e = o[mask], t[mask], e[mask]
                ek, et = _err(o, e), _err(t, e)
                floor = torch.finfo(o.dtype).eps * max(1.0, e.abs().max().item())
                rows.append(dict(check=f"B={batch} S={seq} {what} {name}"[:90], err_kernel=ek, err_torch=et,
                                 ok=bool(torch.isfinite(o).all()) and ek <= 2.0 * et + floor))
    return rows


def check_compile():
    q, k, v = (torch.randn(2, 64, 4, 64, device=DEV, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    mask = torch.arange(64, device=DEV)[None, :] < torch.tensor([64, 20], device=DEV)[:, None]
    f = torch.compile(lambda q, k, v: attention(q, k, v, key_padding_mask=mask, autotune=False), backend="aot_eager",
                      fullgraph=True)
    out = f(q, k, v)
    out.float().sum().backward()
    want = attention(q, k, v, key_padding_mask=mask, autotune=False)
    return [dict(check="torch.compile(aot_eager, fullgraph) fwd+bwd", value=_err(out, want),
                 ok=bool(torch.equal(out, want)) and bool(torch.isfinite(q.grad).all()))]


def check_query_rows():
    """attention_rows (bf16, autotune=False) against attention_naive_ref's rows in fp64 (fed the kernel's dropout
    mask), the noise being the naive reference's in bf16; then its fwd+bwd time against the full varlen attention
    (a row whose value is the milliseconds; the check name carries the full attention's and the ratio)."""
    batch, seq, nh, d = (8, 128, 4, 64) if GPU else (3, 40, 2, 32)
    g = torch.Generator().manual_seed(3)
    lengths = torch.randint(1, seq + 1, (batch,), generator=g)
    lengths[0], lengths[-1] = seq, 1
    cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    rows = torch.cat([int(cu[b]) + torch.randperm(int(lengths[b]), generator=g)[:20] for b in range(batch) if b != 1])
    rows = rows[torch.randperm(rows.numel(), generator=g)].to(DEV)  # any order; sequence 1 has none
    cu = cu.to(DEV)
    q, k, v = (torch.randn(int(cu[-1]), nh, d, generator=g).to(DEV, torch.bfloat16) for _ in range(3))
    dout = torch.zeros_like(q).index_copy_(0, rows, torch.randn(rows.numel(), nh, d, generator=g).to(q))
    p, seed = 0.1, torch.tensor([11], dtype=torch.int64, device=DEV)
    outs = _run(lambda q, k, v: attention_rows(q[rows], k, v, cu, rows, max_seqlen=seq, dropout_p=p, seed=seed,
                                               autotune=False), q, k, v, dout[rows])
    ref_kw = dict(cu_seqlens=cu, max_seqlen=seq, dropout_p=p,
                  dropout_mask=dropout_keep_mask(11, batch, nh, seq, p, device=DEV))
    lowp = _run(attention_naive_ref, q, k, v, dout, **ref_kw)
    exact = _run(attention_naive_ref, q.double(), k.double(), v.double(), dout.double(), **ref_kw)
    checks = []
    for name, o, t, e in zip(("out", "dq", "dk", "dv"), outs, lowp, exact):
        if name == "dq":
            o = o[rows]
        if name in ("out", "dq"):
            t, e = t[rows], e[rows]
        ek, et = _err(o, e), _err(t, e)
        floor = torch.finfo(o.dtype).eps * max(1.0, e.abs().max().item())
        checks.append(dict(check=f"query rows {rows.numel()} of B={batch} S={seq} p={p} {name}", err_kernel=ek,
                           err_torch=et, ok=bool(torch.isfinite(o).all()) and ek <= 2.0 * et + floor))
    timing = bench_attention.bench_query_rows(*((256, 128, 12, 64) if GPU else (2, 40, 2, 32)), autotune_rows=False)
    ms_rows, ms_full = timing["fwd+bwd"]
    checks.append(dict(check=f"query rows {timing['query_rows']} of {timing['tokens']} tokens fwd+bwd ms (all "
                             f"queries {ms_full:.3f} ms: x{ms_full / ms_rows:.2f})", value=ms_rows, ok=ms_rows > 0,
                       timing=timing))
    return checks


def run_gpu_check(out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    log = RowLog("attention", out_dir, width=50)
    jobs = [lambda c=c: check_case(*c) for c in CASES] + [check_dropout_rate, check_every_config, check_compile,
                                                           check_query_rows]
    for job in jobs:
        try:
            rows = job()
        except Exception:  # keep going: one broken variant must not hide the others
            rows = [dict(check=str(getattr(job, "__defaults__", None) or job.__name__), ok=False,
                         error=traceback.format_exc(limit=6))]
        log.add(rows)
    checks = log.rows
    if GPU:
        torch.cuda.synchronize()
    t_check = time.time() - t0
    bench = bench_attention.run()
    last = (bench_attention.GPU_CASES if GPU else bench_attention.CPU_CASES)[-1]
    bench["rows"] += bench_attention.run(cases=[last], dq_atomic=True)["rows"]
    bench["rows"] += bench_attention.run(dropout_p=0.1)["rows"]  # training: attention dropout 0.1
    table = bench_attention.format_table(bench["rows"])
    return report("attention", out_dir, checks, bench, table, t0, t_check, width=50)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="bf16 checks + benchmark of the fused attention on CUDA")
    ap.add_argument("--out", type=Path, required=True)
    res = run_gpu_check(ap.parse_args().out)
    sys.exit(0 if res["all_ok"] else 1)
