"""What per-sample dropout streams cost on the CPU reference path (kernels='none'): each dropout site with the
Philox mask keyed by (site, sample id, position) (kernels/reference.py) against the same site with torch's own
dropout (F.dropout / SDPA's), forward + backward, and a whole pretraining step of the model with and without
`dropout_ids`. On a GPU the Triton kernels draw the keyed masks inside the fused ops (no extra pass); this measures
the CPU path only.

  python benchmarks/dropout_streams.py [--size tiny|base] [--threads N] [--dropout-bits 8|24] [--out FILE.json]

Rows: site, shape, torch-dropout ms, keyed-mask ms, ratio (median of --reps fwd+bwd calls)."""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _timing import median_ms  # noqa: E402

from bertforge import ops  # noqa: E402
from bertforge.config import preset  # noqa: E402
from bertforge.heads import BertForPreTraining  # noqa: E402
from bertforge.kernels import reference as ref  # noqa: E402

P = 0.1
# size -> (batch, seq, hidden, heads, preset of the whole-step row)
SIZES = {"tiny": (8, 128, 128, 2, "tiny"), "base": (16, 128, 768, 12, "bert-base")}


def _fwd_bwd(fn, *inputs):
    inputs = [t.detach().requires_grad_() for t in inputs]

    def run():
        out = fn(*inputs)
        out.backward(torch.ones_like(out))
    return run


def site_rows(B: int, S: int, h: int, nh: int, reps: int, bits: int = 8) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    seq_ids = torch.randint(0, 2**62, (B,), generator=g)
    tokens = ops.token_row_ids(seq_ids.repeat_interleave(S), torch.arange(S).repeat(B))
    seed = torch.tensor([ops.dropout_site_seed(2)])
    x, r = torch.randn(B * S, h, generator=g), torch.randn(B * S, h, generator=g)
    w, b = torch.ones(h), torch.zeros(h)
    q, k, v = (torch.randn(B, S, nh, h // nh, generator=g) for _ in range(3))
    mask = torch.ones(B, S, dtype=torch.bool)
    cases = {
        "embeddings dropout": (lambda x: ref.dropout_ref(x, P),
                               lambda x: ref.dropout_ref(x, P, seed=seed, row_ids=tokens, dropout_bits=bits), (x,)),
        "bias+dropout+residual+LN": (
            lambda x: ref.bias_dropout_add_layernorm_ref(x, b, r, w, b, 1e-12, P),
            lambda x: ref.bias_dropout_add_layernorm_ref(x, b, r, w, b, 1e-12, P, seed=seed, row_ids=tokens,
                                                         dropout_bits=bits), (x,)),
        "attention (SDPA vs naive + mask)": (
            lambda q, k, v: ref.attention_ref(q, k, v, key_padding_mask=mask, dropout_p=P),
            lambda q, k, v: ref.attention_ref(q, k, v, key_padding_mask=mask, dropout_p=P, seed=seed,
                                              row_ids=seq_ids, dropout_bits=bits), (q, k, v)),
        "token row ids (once per forward)": (lambda: None, lambda: ops.token_row_ids(
            seq_ids.repeat_interleave(S), torch.arange(S).repeat(B)), ()),
    }
    rows = []
    for name, (plain, keyed, inputs) in cases.items():
        if inputs:
            t_plain, t_keyed = median_ms(_fwd_bwd(plain, *inputs), reps), median_ms(_fwd_bwd(keyed, *inputs), reps)
        else:
            t_plain, t_keyed = 0.0, median_ms(keyed, reps)
        shape = f"({B}x{S}, {h})" if "attention" not in name else f"B{B} S{S} nh{nh} d{h // nh}"
        rows.append({"site": name, "shape": shape, "torch_ms": t_plain, "keyed_ms": t_keyed,
                     "ratio": t_keyed / t_plain if t_plain else None})
    return rows


def step_row(B: int, S: int, preset_name: str, reps: int, bits: int = 8) -> dict:
    cfg = preset(preset_name, vocab_size=8192, hidden_dropout_prob=P, attention_probs_dropout_prob=P,
                 dropout_bits=bits)
    model = BertForPreTraining(cfg).train()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 8192, (B, S), generator=g)
    mask = torch.ones(B, S, dtype=torch.long)
    labels = torch.where(torch.rand(B, S, generator=g) < 0.15, ids, -100)
    nsp = torch.zeros(B, dtype=torch.long)
    dropout_ids = torch.randint(0, 2**62, (B,), generator=g)

    def step(with_ids):
        def run():
            model.zero_grad(set_to_none=True)
            out = model(ids, attention_mask=mask, mlm_labels=labels, next_sentence_label=nsp,
                        dropout_ids=dropout_ids if with_ids else None)
            out.loss.backward()
        return run
    t_plain, t_keyed = median_ms(step(False), reps), median_ms(step(True), reps)
    return {"site": f"whole step ({preset_name}, {cfg.num_hidden_layers} layers)", "shape": f"B{B} S{S}",
            "torch_ms": t_plain, "keyed_ms": t_keyed, "ratio": t_keyed / t_plain}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dropout-bits", type=int, choices=(8, 24), default=8,
                    help="random bits per element of the keyed masks: 8 (16 elements a Philox call) or 24 (4)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    B, S, h, nh, preset_name = SIZES[args.size]
    bits = args.dropout_bits
    rows = site_rows(B, S, h, nh, args.reps, bits) + [step_row(B, S, preset_name, max(2, args.reps // 2), bits)]
    print(f"{'site':36} {'shape':22} {'torch ms':>9} {'keyed ms':>9} {'ratio':>6}")
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "-"
        print(f"{r['site']:36} {r['shape']:22} {r['torch_ms']:9.2f} {r['keyed_ms']:9.2f} {ratio:>6}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
                "threads": args.threads, "torch": torch.__version__, "size": args.size, "p": P, "dropout_bits": bits}
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
