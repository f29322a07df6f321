"""Kernel benchmarks (all but attention): each fused Triton op against its plain-torch baseline.

  bias_gelu   fused bias + GELU (fwd, fwd+bwd)           vs  F.gelu(x + b)
  layer_norm  fused bias + dropout + residual + LN        vs  F.dropout(x + b) + r -> F.layer_norm
  mlm_loss    chunked fused linear cross-entropy          vs  F.linear -> .float() -> F.cross_entropy on full logits
  masking     one-pass MLM masking (Philox)               vs  torch.rand + the same torch ops on the device
  lamb        multi-tensor fused LAMB (2 launches)        vs  foreach torch LAMB (`bertforge.kernels.reference.lamb_step_ref`)

Reported per row: median time (ms), GB/s over the bytes the op must move (the same byte model for the kernel and the
baseline, so the ratio is a time ratio), % of the device's measured copy bandwidth at the same size (the
target: >= 80% for the epilogues and masking), peak extra memory for the loss, speed-up over torch.
On CPU (no GPU) the Triton kernels run under TRITON_INTERPRET=1 with tiny shapes: the numbers only show the script
works. Usage: python benchmarks/bench_kernels.py [--out results/kernels.json] [--only layer_norm,mlm_loss]
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

from bertforge.kernels.bias_gelu import bias_gelu  # noqa: E402
from bertforge.kernels.lamb import fused_lamb_step  # noqa: E402
from bertforge.kernels.layer_norm import bias_dropout_add_layernorm  # noqa: E402
from bertforge.kernels.masking import mlm_mask  # noqa: E402
from bertforge.kernels.mlm_loss import masked_lm_loss  # noqa: E402
from bertforge.kernels.reference import (bias_dropout_add_layernorm_ref, lamb_step_ref, masked_lm_loss_ref,  # noqa: E402
                               mlm_mask_ref)

GPU = torch.cuda.is_available()
DEV = "cuda" if GPU else "cpu"
DTYPE = torch.bfloat16 if GPU else torch.float32

# (GPU shape, CPU shape) per question: BERT-base, batch 256 x 128 tokens
SHAPES = {
    "bias_gelu": ((32768, 3072), (64, 256)),
    "layer_norm": ((32768, 768), (64, 128)),
    "mlm_loss": ((4915, 768, 30522), (32, 64, 1000)),  # (masked rows, hidden, vocab)
    "masking": ((4096, 512), (8, 128)),
    "lamb": (None, None),  # BERT-base parameter shapes / a tiny stand-in
}


def bench(fn, reps=None) -> float:
    """Median milliseconds of fn() (benchmarks/_timing.py)."""
    return median_ms(fn, reps, cpu_reps=3)


_COPY_CACHE: dict[int, float] = {}


def copy_gbps(nbytes: int) -> float:
    """Device-to-device copy rate (bytes read + written per second / 1e9) moving `nbytes` in total."""
    key = nbytes // 2 // 1024 * 1024 or 1024
    if key not in _COPY_CACHE:
        a = torch.empty(key, dtype=torch.uint8, device=DEV)
        b = torch.empty_like(a)
        _COPY_CACHE[key] = 2 * key / bench(lambda: b.copy_(a)) / 1e6
    return _COPY_CACHE[key]


def _rows(question, shape, variant, nbytes, ms_kernel, ms_torch, **extra):
    copy = copy_gbps(nbytes)
    out = []
    for impl, ms in (("triton", ms_kernel), ("torch", ms_torch)):
        gbps = nbytes / ms / 1e6
        out.append(dict(question=question, shape=list(shape), variant=variant, impl=impl, ms=round(ms, 4),
                        gbps=float(f"{gbps:.4g}"), pct_copy=round(100 * gbps / copy, 1),
                        speedup=round(ms_torch / ms, 3), **extra))
    return out


def _grad_bench(f, inputs, dy):
    """A callable running forward + backward of f(*inputs) with upstream gradient dy."""
    def run():
        for t in inputs:
            t.grad = None
        f(*inputs).backward(dy)
    return run


def bench_bias_gelu():
    M, N = SHAPES["bias_gelu"][0 if GPU else 1]
    x = torch.randn(M, N, device=DEV, dtype=DTYPE, requires_grad=True)
    b = torch.randn(N, device=DEV, dtype=DTYPE, requires_grad=True)
    dy = torch.randn_like(x)
    e = x.element_size()
    rows = []
    with torch.no_grad():
        rows += _rows("bias_gelu", (M, N), "fwd", 2 * M * N * e, bench(lambda: bias_gelu(x, b)),
                      bench(lambda: F.gelu(x + b)))
    rows += _rows("bias_gelu", (M, N), "fwd+bwd", 5 * M * N * e, bench(_grad_bench(bias_gelu, [x, b], dy)),
                  bench(_grad_bench(lambda x, b: F.gelu(x + b), [x, b], dy)))
    return rows


def bench_layer_norm():
    M, H = SHAPES["layer_norm"][0 if GPU else 1]
    x, r = (torch.randn(M, H, device=DEV, dtype=DTYPE, requires_grad=True) for _ in range(2))
    b, w, lb = (torch.randn(H, device=DEV, dtype=DTYPE, requires_grad=True) for _ in range(3))
    dy = torch.randn_like(x)
    e = x.element_size()
    rows = []
    for p in (0.0, 0.1):
        fused = lambda *a: bias_dropout_add_layernorm(*a, 1e-12, p)  # noqa: E731
        ref = lambda *a: bias_dropout_add_layernorm_ref(*a, 1e-12, p)  # noqa: E731
        with torch.no_grad():  # inference: reads x, r, writes out
            rows += _rows("layer_norm", (M, H), f"fwd p={p}", 3 * M * H * e, bench(lambda: fused(x, b, r, w, lb)),
                          bench(lambda: ref(x, b, r, w, lb)))
        rows += _rows("layer_norm", (M, H), f"fwd+bwd p={p}", 8 * M * H * e,
                      bench(_grad_bench(fused, [x, b, r, w, lb], dy)), bench(_grad_bench(ref, [x, b, r, w, lb], dy)))
    return rows


def _peak_mb(fn) -> float | None:
    if not GPU:
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)


def bench_mlm_loss():
    n, h, V = SHAPES["mlm_loss"][0 if GPU else 1]
    hid = torch.randn(n, h, device=DEV, dtype=DTYPE, requires_grad=True)
    w = (torch.randn(V, h, device=DEV, dtype=DTYPE) * h ** -0.5).requires_grad_()
    b = torch.zeros(V, device=DEV, dtype=DTYPE, requires_grad=True)
    labels = torch.randint(0, V, (n,), device=DEV)

    def step(fn):
        def run():
            for t in (hid, w, b):
                t.grad = None
            fn(hid, w, b, labels)[0].backward()
        return run

    fused, ref = step(masked_lm_loss), step(masked_lm_loss_ref)
    ms_k, ms_t = bench(fused, reps=None if GPU else 1), bench(ref, reps=None if GPU else 1)
    for t in (hid, w, b):
        t.grad = None
    mem_k = _peak_mb(fused)  # peak above inputs during fwd+bwd, the returned gradients included
    for t in (hid, w, b):
        t.grad = None
    mem_t = _peak_mb(ref)
    flops = 6 * n * h * V
    logits_mb = n * V * 4 / 2**20
    rows = []
    for impl, ms, mem in (("triton", ms_k, mem_k), ("torch", ms_t, mem_t)):
        rows.append(dict(question="mlm_loss", shape=[n, h, V], variant="fwd+bwd", impl=impl, ms=round(ms, 4),
                         tflops=round(flops / ms / 1e9, 1), peak_extra_mb=mem, fp32_logits_mb=round(logits_mb, 1),
                         mem_vs_fp32_logits=None if mem is None else round(mem / logits_mb, 3),
                         mem_vs_torch=None if mem is None else round(mem / mem_t, 3),
                         speedup=round(ms_t / ms, 3)))
    return rows


def bench_masking():
    B, S = SHAPES["masking"][0 if GPU else 1]
    ids = torch.randint(1000, 30522, (B, S), device=DEV)
    special = torch.zeros(B, S, dtype=torch.bool, device=DEV)
    special[:, 0] = special[:, -1] = True
    kw = dict(mask_token_id=103, vocab_size=30522)
    cdf = torch.linspace(0, 1, 30523, device=DEV)[1:].float()

    def torch_masking(unigram):
        u = torch.rand(3, ids.numel(), device=DEV)
        return mlm_mask_ref(ids, special, uniforms=u, unigram_cdf=cdf if unigram else None, **kw)

    n = ids.numel()
    nbytes = n * (8 + 1 + 8 + 8) + int(0.15 * n) * 8
    rows = []
    for unigram in (False, True):
        rows += _rows("masking", (B, S), "unigram" if unigram else "uniform", nbytes,
                      bench(lambda: mlm_mask(ids, special, seed=1, unigram_cdf=cdf if unigram else None, **kw)),
                      bench(lambda: torch_masking(unigram)))
    return rows


def _bert_base_shapes():
    h, ffn, V = 768, 3072, 30522
    layer = [(3 * h, h), (3 * h,), (h, h), (h,), (h,), (h,), (ffn, h), (ffn,), (h, ffn), (h,), (h,), (h,)]
    return [(V, h), (512, h), (2, h), (h,), (h,)] + layer * 12 + [(h, h), (h,), (h,), (h,), (V,)]


def bench_lamb():
    shapes = _bert_base_shapes() if GPU else [(257, 33), (1000,), (7,), (64, 64)]
    params = [torch.randn(s, device=DEV) for s in shapes]
    grads = [torch.randn_like(p) for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    hp = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.01, step=10)
    numel = sum(p.numel() for p in params)
    return _rows("lamb", (len(shapes), numel), "step", 40 * numel,
                 bench(lambda: fused_lamb_step(params, grads, m, v, **hp)),
                 bench(lambda: lamb_step_ref(params, grads, m, v, **hp)))


QUESTIONS = {"bias_gelu": bench_bias_gelu, "layer_norm": bench_layer_norm, "mlm_loss": bench_mlm_loss,
             "masking": bench_masking, "lamb": bench_lamb}


def format_table(rows) -> str:
    head = f"{'question':<11} {'shape':<20} {'variant':<15} {'impl':<7} {'ms':>9} {'GB/s':>8} {'%copy':>6} " \
           f"{'TFLOP/s':>8} {'peakMB':>8} {'speedup':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['question']:<11} {'x'.join(map(str, r['shape'])):<20} {r['variant']:<15} {r['impl']:<7} "
                     f"{r['ms']:>9.3f} {r.get('gbps', ''):>8} {r.get('pct_copy', ''):>6} {r.get('tflops', ''):>8} "
                     f"{'' if r.get('peak_extra_mb') is None else r['peak_extra_mb']:>8} {r['speedup']:>8.2f}")
    return "\n".join(lines)


def run(only=None) -> dict:
    torch.manual_seed(0)
    rows = []
    for name, fn in QUESTIONS.items():
        if only and name not in only:
            continue
        rows += fn()
    device = torch.cuda.get_device_name() if GPU else "cpu (TRITON_INTERPRET=1: timings meaningless)"
    return dict(device=device, dtype=str(DTYPE), torch=torch.__version__, rows=rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="write the JSON here")
    ap.add_argument("--only", default="", help="comma-separated questions: " + ",".join(QUESTIONS))
    args = ap.parse_args(argv)
    res = run([q for q in args.only.split(",") if q] or None)
    print(f"device: {res['device']}, dtype {res['dtype']}")
    print(format_table(res["rows"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
