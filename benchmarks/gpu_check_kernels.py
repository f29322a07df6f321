"""GPU check of the kernels (all but attention), for benchmarks/gpu_check.sh: bf16 correctness of every kernel and
gradient against its torch reference on CUDA (the rule of tests/kernels: kernel error vs an fp64 reference at most
2x plain torch's bf16 error, plus one ulp), bit-exactness of the masking against its reference, then the benchmarks of
bench_kernels.py at BERT-base sizes. Prints each check's row as it finishes (appended to kernels*_rows.jsonl), then a
table; writes kernels_check.json and kernels_bench.json under --out.
Designed to finish in < 90 s on an H100/H200. Without a GPU it runs the same code on small shapes under
TRITON_INTERPRET=1 (a smoke test of the script itself, in CI).
Usage: python benchmarks/gpu_check_kernels.py --out DIR"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_kernels  # noqa: E402
from _check_report import RowLog, report  # noqa: E402

from bertforge.kernels.bias_gelu import bias_gelu  # noqa: E402
from bertforge.kernels.lamb import fused_lamb_step  # noqa: E402
from bertforge.kernels.layer_norm import bias_dropout_add_layernorm  # noqa: E402
from bertforge.kernels.masking import mlm_mask, philox_uniforms  # noqa: E402
from bertforge.kernels.mlm_loss import masked_lm_loss  # noqa: E402
from bertforge.kernels.reference import (bias_dropout_add_layernorm_ref, bias_gelu_ref, lamb_step_ref,  # noqa: E402
                               layer_norm_dropout_keep_ref, masked_lm_loss_ref, mlm_mask_ref, quantized_dropout_p,
                               unigram_cdf_from_counts)

GPU = torch.cuda.is_available()
DEV = "cuda" if GPU else "cpu"
V = 30522 if GPU else 1000  # vocabulary of the loss and masking checks


def _pick(gpu, smoke):
    return gpu if GPU else smoke


def _err(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def dropout_keep_mask(seed, shape, p, device):
    """The epilogue kernel's keep mask over a (..., h) tensor (the pure-torch Philox replay)."""
    return layer_norm_dropout_keep_ref(seed, shape[:-1].numel() if hasattr(shape, "numel") else
                                       int(torch.tensor(shape[:-1]).prod()), shape[-1], p, device=device).view(shape)


def _compare(name, outs, lowp, exact, factor=2.0):
    """One result row per tensor: kernel and torch errors vs exact; ok if kernel <= factor * torch + 1 ulp."""
    rows = []
    for i, (o, t, e) in enumerate(zip(outs, lowp, exact)):
        ek, et = _err(o, e), _err(t, e)
        floor = torch.finfo(o.dtype).eps * max(1.0, e.abs().max().item())
        rows.append(dict(check=f"{name}[{i}]", err_kernel=ek, err_torch=et, ok=bool(ek <= factor * et + floor)))
    return rows


def _fwd_bwd(fn, args, dy):
    args = [a.detach().clone().requires_grad_(a.is_floating_point()) for a in args]
    y = fn(*args)
    y = y[0] if isinstance(y, tuple) else y
    y.backward(dy.to(y.dtype) if dy is not None else None)
    return [y.detach()] + [a.grad for a in args if a.requires_grad]


def check_bias_gelu():
    rows = []
    for shape in _pick(((3, 129, 1000), (4096, 3072)), ((3, 29, 100), (64, 96))):
        x = torch.randn(shape, device=DEV).bfloat16()
        b = torch.randn(shape[-1], device=DEV).bfloat16()
        dy = torch.randn(shape, device=DEV)
        for approx in ("none", "tanh"):
            f = lambda x, b: bias_gelu(x, b, approx)  # noqa: E731
            r = lambda x, b: bias_gelu_ref(x, b, approx)  # noqa: E731
            rows += _compare(f"bias_gelu {shape} {approx}", _fwd_bwd(f, [x, b], dy), _fwd_bwd(r, [x, b], dy),
                             _fwd_bwd(r, [x.double(), b.double()], dy.double()))
    return rows


def check_layer_norm():
    rows = []
    for shape, p in _pick((((3, 129, 1000), 0.0), ((4096, 768), 0.0), ((4096, 768), 0.1), ((1, 7, 1024), 0.1)),
                          (((3, 29, 100), 0.0), ((64, 96), 0.1), ((1, 7, 128), 0.1))):
        h = shape[-1]
        x, r = torch.randn(shape, device=DEV).bfloat16(), torch.randn(shape, device=DEV).bfloat16()
        b, w, lb = (torch.randn(h, device=DEV).bfloat16() for _ in range(3))
        dy = torch.randn(shape, device=DEV)
        mask = dropout_keep_mask(42, shape, p, device=DEV) if p > 0 else None
        f = lambda *a: bias_dropout_add_layernorm(*a, 1e-12, p, seed=42)  # noqa: E731
        ref = lambda *a: bias_dropout_add_layernorm_ref(*a, 1e-12, p, keep_mask=mask)  # noqa: E731
        args = [x, b, r, w, lb]
        rows += _compare(f"layer_norm {shape} p={p}", _fwd_bwd(f, args, dy), _fwd_bwd(ref, args, dy),
                         _fwd_bwd(ref, [a.double() for a in args], dy.double()))
    shape = _pick((4096, 768), (256, 96))
    keep = dropout_keep_mask(3, shape, 0.1, device=DEV).float().mean().item()
    p = quantized_dropout_p(0.1)  # the probability applied: 26/256 at 8-bit thresholds
    bound = 5 * (p * (1 - p) / (shape[0] * shape[1])) ** 0.5
    rows.append(dict(check=f"layer_norm keep rate p=0.1 (applied {p})", value=keep, ok=abs(keep - (1 - p)) < bound))
    return rows


def check_mlm_loss():
    n, h = _pick((613, 768), (37, 32))
    hid = torch.randn(n, h, device=DEV).bfloat16()
    w = (torch.randn(V, h, device=DEV) * h ** -0.5 * 3).bfloat16()
    b = (torch.randn(V, device=DEV) * 0.5).bfloat16()
    labels = torch.randint(0, V, (n,), device=DEV)
    labels[::7] = -100
    run = lambda fn, args: _fwd_bwd(lambda *a: fn(*a, labels), args, None)  # noqa: E731
    args = [hid, w, b]
    rows = _compare("mlm_loss (loss, dh, dW, db)", run(masked_lm_loss, args), run(masked_lm_loss_ref, args),
                    run(masked_lm_loss_ref, [a.double() for a in args]))
    preds = masked_lm_loss(hid, w, b, labels)[1]
    logits = torch.nn.functional.linear(hid.float(), w.float(), b.float())
    gap = (logits.gather(1, preds[:, None]).squeeze(1) - logits.max(1).values).abs().max().item()
    rows.append(dict(check="mlm_loss argmax: top logit - logit[pred]", value=gap, ok=gap < 0.1))
    return rows


def check_masking():
    shape = _pick((256, 128), (16, 64))
    ids = torch.randint(V // 30, V, shape, device=DEV)
    special = torch.rand(shape, device=DEV) < 0.2
    cdf = unigram_cdf_from_counts(torch.rand(V, device=DEV))
    rows = []
    for unigram in (None, cdf):
        kw = dict(mask_token_id=103, vocab_size=V, unigram_cdf=unigram)
        out = mlm_mask(ids, special, seed=7, offset=5, **kw)
        ref = mlm_mask_ref(ids, special, uniforms=philox_uniforms(7, 5, ids.numel(), device=DEV), **kw)
        again = mlm_mask(ids, special, seed=7, offset=5, **kw)
        same = all(torch.equal(a, b) for a, b in zip(out, ref)) and all(torch.equal(a, b) for a, b in zip(out, again))
        n = (~special).sum().item()
        rate = out[2].numel() / n
        rows.append(dict(check=f"masking bit-exact + deterministic ({'unigram' if unigram is not None else 'uniform'})",
                         value=rate, ok=bool(same and abs(rate - 0.15) < 5 * (0.15 * 0.85 / n) ** 0.5)))
    return rows


def check_lamb():
    shapes = _pick([(30522, 768), (768,), (3072, 768), (1,), (7, 3)], [(100, 32), (32,), (1,), (7, 3)])
    params = [torch.randn(s, device=DEV) * 0.05 for s in shapes]
    grads = [torch.randn(s, device=DEV).bfloat16() for s in shapes]
    hp = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.01)
    states = {}
    for name, fn, dt in (("fused", fused_lamb_step, torch.float32), ("ref", lamb_step_ref, torch.float32),
                         ("exact", lamb_step_ref, torch.float64)):
        p = [t.clone().to(dt) for t in params]
        m, v = [torch.zeros_like(t) for t in p], [torch.zeros_like(t) for t in p]
        for step in (1, 2, 3):
            fn(p, [g.to(dt) if dt == torch.float64 else g for g in grads], m, v, step=step, **hp)
        states[name] = p + m + v
    return _compare("lamb 3 steps (params, m, v)", states["fused"], states["ref"], states["exact"], factor=4.0)


FAMILIES = {"bias_gelu": check_bias_gelu, "layer_norm": check_layer_norm, "mlm_loss": check_mlm_loss,
            "masking": check_masking, "lamb": check_lamb}


def run_gpu_check(out_dir: Path, only=None, bench: bool = True) -> dict:
    """only: family names (default all); bench: also run bench_kernels for those families."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tag = "kernels" if not only else "kernels_" + "_".join(only)
    log = RowLog(tag, out_dir, width=55)
    for name, fn in FAMILIES.items():
        if only and name not in only:
            continue
        try:
            rows = fn()
        except Exception:  # keep going: one broken kernel must not hide the others
            rows = [dict(check=fn.__name__, ok=False, error=traceback.format_exc(limit=5))]
        log.add(rows)
    checks = log.rows
    if GPU:
        torch.cuda.synchronize()
    t_check = time.time() - t0
    bench = bench_kernels.run(only) if bench else {"rows": []}
    table = bench_kernels.format_table(bench["rows"]) if bench["rows"] else ""
    return report(tag, out_dir, checks, bench, table, t0, t_check, width=55)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="bf16 checks + benchmarks of the kernels on CUDA")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--only", action="append", choices=sorted(FAMILIES), help="kernel family (repeatable)")
    ap.add_argument("--no-bench", action="store_true", help="correctness only")
    a = ap.parse_args()
    res = run_gpu_check(a.out, a.only, not a.no_bench)
    sys.exit(0 if res["all_ok"] else 1)
