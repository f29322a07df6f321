"""Attention benchmark: our fused Triton attention vs torch.nn.functional.scaled_dot_product_attention.

Per (B, S) case, three variants, each timed forward and forward + backward:
  dense    no padding                                   ours (padded layout, no mask)    vs SDPA, no mask
  padded   lengths uniform in [S/4, S], key-padding mask ours (padded + mask)            vs SDPA + boolean mask
  varlen   same lengths                                 ours unpadded on the real tokens vs SDPA + boolean mask
q, k, v are (B, S, nh, d) (SDPA gets the (B, nh, S, d) transposed views, as a BERT layer hands it). TFLOP/s count
the useful work only: 4 * nh * d * sum(L_b^2) per forward (backward = 2.5x forward), the same for both sides, so the
ratio (SDPA time / ours) is a time ratio. Targets (H200, bf16, d = 64, fwd+bwd): dense >= 1.3x at S = 128
(B = 256, 12 heads) and >= 1.2x at S = 512 (B = 64); varlen >= 1.6x SDPA-with-mask.
On CPU (no GPU) the kernel runs under TRITON_INTERPRET=1 with tiny shapes: the numbers only show the script works.
Usage: python benchmarks/bench_attention.py [--cases 256x128,64x512] [--heads 12] [--head-dim 64] [--dropout 0.1]
       [--out results/attention.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any @triton.jit module is imported
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch.nn.functional as F  # noqa: E402
from _timing import median_ms  # noqa: E402

from bertforge.kernels.attention import attention  # noqa: E402

GPU = torch.cuda.is_available()
DEV = "cuda" if GPU else "cpu"
DTYPE = torch.bfloat16 if GPU else torch.float32
GPU_CASES = ((256, 128), (64, 512))  # (B, S), BERT-base pretraining phases 1 and 2
CPU_CASES = ((2, 64), (2, 100))
# (variant, S) -> target minimum fwd+bwd speed-up over SDPA
TARGETS = {("dense", 128): 1.3, ("dense", 512): 1.2, ("varlen", 128): 1.6, ("varlen", 512): 1.6}


def bench(fn, reps=None) -> float:
    """Median milliseconds of fn() (benchmarks/_timing.py)."""
    return median_ms(fn, reps, cpu_reps=2)


def _fwd_and_step(f, inputs, dout):
    """(forward-only closure, forward + backward closure)."""
    def fwd():
        with torch.no_grad():
            f(*inputs)

    def step():
        for t in inputs:
            t.grad = None
        f(*inputs).backward(dout)

    return fwd, step


def bench_case(batch, seq, nheads, head_dim, dropout_p=0.0, seed=0, dq_atomic=False):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max(1, seq // 4), seq + 1, (batch,), generator=g)
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).to(DEV)  # (B, S), real tokens first
    q, k, v, dout = (torch.randn(batch, seq, nheads, head_dim, generator=g).to(DEV, DTYPE) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_()
    sdpa_mask = mask[:, None, None, :]  # (B, 1, 1, S)
    index = mask.flatten().nonzero().flatten()
    cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(DEV, torch.int32)
    qv, kv, vv = (t.detach().flatten(0, 1)[index].requires_grad_() for t in (q, k, v))  # (total, nh, d)
    dout_v = dout.flatten(0, 1)[index]

    def sdpa(q, k, v, m=None):
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=m,
                                              dropout_p=dropout_p).transpose(1, 2)

    variants = {
        "dense": (lambda q, k, v: attention(q, k, v, dropout_p=dropout_p, dq_atomic=dq_atomic), (q, k, v), dout,
                  lambda q, k, v: sdpa(q, k, v), batch * seq * seq),
        "padded": (lambda q, k, v: attention(q, k, v, key_padding_mask=mask, dropout_p=dropout_p, dq_atomic=dq_atomic),
                   (q, k, v), dout, lambda q, k, v: sdpa(q, k, v, sdpa_mask), int((lengths ** 2).sum())),
        "varlen": (lambda q, k, v: attention(q, k, v, cu_seqlens=cu, max_seqlen=int(lengths.max()),
                                             dropout_p=dropout_p, dq_atomic=dq_atomic), (qv, kv, vv), dout_v,
                   lambda q, k, v: sdpa(q, k, v, sdpa_mask), int((lengths ** 2).sum())),
    }
    rows = []
    for name, (ours, ours_in, ours_dout, ref, pairs) in variants.items():
        fwd_flops = 4.0 * nheads * head_dim * pairs
        times = {}
        for impl, f, inputs, dy in (("ours", ours, ours_in, ours_dout), ("sdpa", ref, (q, k, v), dout)):
            fwd, step = _fwd_and_step(f, inputs, dy)
            times[impl] = (bench(fwd), bench(step))
        for i, (pass_, flops) in enumerate((("fwd", fwd_flops), ("fwd+bwd", 3.5 * fwd_flops))):
            ms_ours, ms_sdpa = times["ours"][i], times["sdpa"][i]
            row = dict(shape=[batch, seq, nheads, head_dim], variant=name, pass_=pass_, dropout_p=dropout_p,
                       ms_ours=round(ms_ours, 4), ms_sdpa=round(ms_sdpa, 4),
                       tflops_ours=float(f"{flops / ms_ours / 1e9:.4g}"),
                       tflops_sdpa=float(f"{flops / ms_sdpa / 1e9:.4g}"),
                       speedup=round(ms_sdpa / ms_ours, 3))
            target = TARGETS.get((name.split('/')[0], seq)) if pass_ == "fwd+bwd" and head_dim == 64 else None
            if target is not None and GPU:
                row.update(target=target, meets=row["speedup"] >= target)
            rows.append(row)
    return rows


def bench_query_rows(batch, seq, nheads, head_dim, rows_per_seq=20, dropout_p=0.1, seed=0, autotune_rows=True) -> dict:
    """The last layer's attention in pretraining: queries for up to rows_per_seq rows of each sequence only
    (kernels/attention_rows.py, as ModelConfig.last_layer_subset runs it) vs every query of the unpadded batch
    (kernels/attention.py, autotuned; the rows are then selected). Same lengths as bench_case; dout is zero outside
    the rows for the full attention. autotune_rows False: the rows' first GPU configs (no tuning time).
    -> {'fwd': (ms rows, ms full), 'fwd+bwd': (...)} plus the shape and the counts."""
    from bertforge.kernels.attention_rows import attention_rows

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max(1, seq // 4), seq + 1, (batch,), generator=g)
    cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    total = int(cu[-1])
    picks = [int(cu[b]) + torch.randperm(int(lengths[b]), generator=g)[:rows_per_seq] for b in range(batch)]
    rows = torch.cat(picks).to(DEV)
    cu = cu.to(DEV)
    q, k, v = (torch.randn(total, nheads, head_dim, generator=g).to(DEV, DTYPE).requires_grad_() for _ in range(3))
    dout_rows = torch.randn(rows.numel(), nheads, head_dim, generator=g).to(DEV, DTYPE)
    dout_full = torch.zeros_like(q).index_copy_(0, rows, dout_rows)
    q_rows = q.detach()[rows].requires_grad_()
    seed_t = torch.tensor([seed], dtype=torch.int64, device=DEV)
    kw = dict(max_seqlen=int(lengths.max()), dropout_p=dropout_p, seed=seed_t)
    rows_fn = (lambda q, k, v: attention_rows(q, k, v, cu, rows, autotune=autotune_rows, **kw), (q_rows, k, v),
               dout_rows)
    full_fn = (lambda q, k, v: attention(q, k, v, cu_seqlens=cu, **kw), (q, k, v), dout_full)
    times = {}
    for impl, (f, inputs, dy) in (("rows", rows_fn), ("full", full_fn)):
        fwd, step = _fwd_and_step(f, inputs, dy)
        times[impl] = (bench(fwd), bench(step))
    return {"shape": [batch, seq, nheads, head_dim], "query_rows": rows.numel(), "tokens": total,
            "dropout_p": dropout_p, "fwd": (times["rows"][0], times["full"][0]),
            "fwd+bwd": (times["rows"][1], times["full"][1])}


def format_table(rows) -> str:
    head = f"{'B x S x nh x d':<18} {'variant':<10} {'pass':<8} {'p':>4} {'ms ours':>9} {'ms sdpa':>9} " \
           f"{'TF/s ours':>9} {'TF/s sdpa':>9} {'speedup':>8} {'target':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        tgt = f"{r['target']:.1f}{'ok' if r['meets'] else '!!'}" if "target" in r else ""
        lines.append(f"{'x'.join(map(str, r['shape'])):<18} {r['variant']:<10} {r['pass_']:<8} {r['dropout_p']:>4} "
                     f"{r['ms_ours']:>9.3f} {r['ms_sdpa']:>9.3f} {r['tflops_ours']:>9.4g} {r['tflops_sdpa']:>9.4g} "
                     f"{r['speedup']:>8.2f} {tgt:>7}")
    return "\n".join(lines)


def run(cases=None, nheads=None, head_dim=None, dropout_p=0.0, dq_atomic=False) -> dict:
    """dq_atomic: sequences longer than one key block accumulate dq with atomics (variant names get '/at')."""
    cases = cases or (GPU_CASES if GPU else CPU_CASES)
    nheads = nheads or (12 if GPU else 2)
    head_dim = head_dim or (64 if GPU else 32)
    rows = []
    for batch, seq in cases:
        rows += bench_case(batch, seq, nheads, head_dim, dropout_p, dq_atomic=dq_atomic)
    if dq_atomic:
        for r in rows:
            r["variant"] += "/at"
    device = torch.cuda.get_device_name() if GPU else "cpu (TRITON_INTERPRET=1: timings meaningless)"
    return dict(device=device, dtype=str(DTYPE), torch=torch.__version__, rows=rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="", help="comma-separated BxS, e.g. 256x128,64x512")
    ap.add_argument("--heads", type=int, default=None)
    ap.add_argument("--head-dim", type=int, default=None)
    ap.add_argument("--dropout", type=float, default=0.0, help="attention dropout for both sides")
    ap.add_argument("--dq-atomic", action="store_true", help="long sequences: dq by atomics in the dk/dv kernel")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = ap.parse_args(argv)
    cases = [tuple(int(x) for x in c.split("x")) for c in args.cases.split(",") if c]
    res = run(cases or None, args.heads, args.head_dim, args.dropout, args.dq_atomic)
    print(f"device: {res['device']}, dtype {res['dtype']}")
    print(format_table(res["rows"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
