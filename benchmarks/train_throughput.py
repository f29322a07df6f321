"""End-to-end pretraining throughput: bertforge vs Hugging Face `BertForPreTraining` on the same device, model,
batch, sequence length and precision, in one run (issue 7).

For each model shape it times N optimizer steps (after warm-up; CUDA events on GPU, perf_counter on CPU; median) of
  hf            transformers BertForPreTraining, SDPA attention, bf16 autocast, AdamW(fused=True), padded batches,
                MLM logits on every token (what users run)
  hf-compile    the same under torch.compile
  ours          bertforge: unpadded batches, masked-rows-only MLM head, kernels as chosen by --kernels
  ours-padded   bertforge on padded batches (ablation: the share of unpadding)
  ours-compile  bertforge under torch.compile
and reports sequences/s, real (non-pad) tokens/s, MFU against the measured matmul rate of the same device, peak
memory and ratios to `hf`. Batches have either full-length sequences or lengths drawn from a file of real sample
lengths (--lengths FILE.npy, e.g. written by `--write-lengths` from a prepared corpus's sample map).

MFU uses the issue's training FLOPs per token: 72·L·h² + 12·L·h·s + 6·m·(h² + h·V) with m = 0.15.
On CPU it runs the tiny shape so CI exercises it: `python benchmarks/train_throughput.py --shapes tiny-64`.
Output: a JSON file (--out) and a table on stdout."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.config import preset  # noqa: E402
from engine.heads import BertForPreTraining  # noqa: E402

SHAPES = {"tiny-64": ("tiny", 64), "base-128": ("bert-base", 128), "base-512": ("bert-base", 512),
          "large-128": ("bert-large", 128), "large-512": ("bert-large", 512), "minilm-128": ("minilm-l6", 128)}
VARIANTS = ("hf", "hf-compile", "ours", "ours-padded", "ours-compile")
MASK_SHARE = 0.15


def train_flops_per_token(L: int, h: int, s: int, V: int) -> float:
    return 72 * L * h * h + 12 * L * h * s + 6 * MASK_SHARE * (h * h + h * V)


def measure_matmul_rate(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of a large square matmul on this device (the MFU ceiling)."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    times = _timed(lambda: a @ b, device, repeats=10)
    return 2 * n ** 3 / statistics.median(times)


def _timed(fn, device, repeats):
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def make_batch(batch: int, seq: int, vocab: int, lengths_pool, device, gen):
    """Token ids (B, S) with real lengths, 15% of real non-[CLS] tokens masked; labels, NSP labels."""
    if lengths_pool is None:
        lengths = torch.full((batch,), seq, dtype=torch.long)
    else:
        pick = torch.randint(0, len(lengths_pool), (batch,), generator=gen)
        lengths = torch.as_tensor(lengths_pool)[pick].clamp(2, seq).long()
    positions = torch.arange(seq)[None, :]
    mask = positions < lengths[:, None]
    ids = torch.randint(5, vocab, (batch, seq), generator=gen) * mask
    types = (positions >= lengths[:, None] // 2).long() * mask
    chosen = (torch.rand(batch, seq, generator=gen) < MASK_SHARE) & mask & (positions > 0)
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    nsp = torch.randint(0, 2, (batch,), generator=gen)
    to = dict(device=device)
    return {"input_ids": ids.to(**to), "token_type_ids": types.to(**to), "attention_mask": mask.long().to(**to),
            "labels": labels.to(**to), "next_sentence_label": nsp.to(**to), "lengths": lengths}


def ours_step_inputs(b, padded: bool):
    if padded:
        flat = b["labels"].flatten()
        positions = (flat != -100).nonzero().flatten()
        return dict(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"], attention_mask=b["attention_mask"],
                    masked_positions=positions, mlm_labels=flat[positions], next_sentence_label=b["next_sentence_label"])
    real = b["attention_mask"].bool()
    lengths = b["lengths"].to(real.device)
    cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).int()
    labels = b["labels"][real]
    positions = (labels != -100).nonzero().flatten()
    return dict(input_ids=b["input_ids"][real], token_type_ids=b["token_type_ids"][real], cu_seqlens=cu,
                max_seqlen=int(lengths.max()), masked_positions=positions, mlm_labels=labels[positions],
                next_sentence_label=b["next_sentence_label"])


def build(variant: str, cfg, device, kernels: str):
    if variant.startswith("hf"):
        import transformers

        hf_cfg = transformers.BertConfig(**cfg.to_hf_config())
        model = transformers.BertForPreTraining._from_config(hf_cfg, attn_implementation="sdpa").to(device)

        def step_fn(b):
            return model(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"],
                         attention_mask=b["attention_mask"], labels=b["labels"],
                         next_sentence_label=b["next_sentence_label"]).loss
    else:
        model = BertForPreTraining(cfg.replace(kernels=kernels)).to(device)
        padded = variant == "ours-padded"

        def step_fn(b):
            return model(**ours_step_inputs(b, padded)).loss
    forward = step_fn
    if variant.endswith("compile"):
        model = model  # parameters unchanged; compile the step's forward
        forward = torch.compile(step_fn, dynamic=True)
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    return model, forward, optimizer


def run_variant(variant, cfg, seq, batch, steps, warmup, device, dtype, lengths_pool, kernels):
    torch.manual_seed(0)
    model, forward, optimizer = build(variant, cfg, device, kernels)
    gen = torch.Generator().manual_seed(1)
    batches = [make_batch(batch, seq, cfg.vocab_size, lengths_pool, device, gen) for _ in range(4)]
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step(i=[0]):
        b = batches[i[0] % len(batches)]
        i[0] += 1
        with autocast:
            loss = forward(b)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        step()
    times = _timed(step, device, steps)
    median = statistics.median(times)
    real_tokens = statistics.mean(int(b["lengths"].sum()) for b in batches)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else None
    del model, optimizer
    return {"variant": variant, "step_s": median, "seq_per_s": batch / median, "real_tok_per_s": real_tokens / median,
            "real_tokens_per_step": real_tokens, "peak_gib": peak}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="tiny-64", help=f"comma list of {', '.join(SHAPES)}")
    p.add_argument("--variants", default="hf,ours,ours-padded", help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--batch", type=str, default="8", help="micro batch, or shape=batch pairs: base-128=256,...")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--lengths", default="full", help="'full' or a .npy file of real sample lengths")
    p.add_argument("--kernels", default="auto", choices=("auto", "none", "triton"),
                   help="bertforge kernels: auto = triton on CUDA, none on CPU")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--out", default="benchmarks/results/train_throughput.json")
    args = p.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(args.precision,
                                                                torch.bfloat16 if device.type == "cuda" else
                                                                torch.float32)
    kernels = args.kernels if args.kernels != "auto" else ("triton" if device.type == "cuda" else "none")
    lengths_pool = None if args.lengths == "full" else __import__("numpy").load(args.lengths)
    batches = {}
    for item in args.batch.split(","):
        key, _, value = item.rpartition("=")
        batches[key or "*"] = int(value)
    peak = measure_matmul_rate(device, dtype)
    rows = []
    for shape in args.shapes.split(","):
        name, seq = SHAPES[shape]
        cfg = preset(name, vocab_size=args.vocab)
        batch = batches.get(shape, batches.get("*", 8))
        flops_tok = train_flops_per_token(cfg.num_hidden_layers, cfg.hidden_size, seq, cfg.vocab_size)
        for variant in args.variants.split(","):
            try:
                r = run_variant(variant, cfg, seq, batch, args.steps, args.warmup, device, dtype, lengths_pool,
                                kernels)
            except Exception as exc:  # report, keep measuring the others
                r = {"variant": variant, "error": f"{type(exc).__name__}: {exc}"[:300]}
            r.update(shape=shape, batch=batch, seq=seq, lengths=args.lengths)
            if "step_s" in r:
                r["mfu"] = r["real_tok_per_s"] * flops_tok / peak
            rows.append(r)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    for r in rows:
        base = next((x for x in rows if x["shape"] == r["shape"] and x["variant"] == "hf" and "step_s" in x), None)
        if base and "step_s" in r:
            r["speedup_vs_hf"] = r["real_tok_per_s"] / base["real_tok_per_s"]
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "dtype": str(dtype),
              "kernels": kernels, "matmul_flops": peak, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)
    print(f"device {result['device']}  {dtype}  kernels={kernels}  matmul {peak / 1e12:.1f} TFLOP/s")
    print(f"{'shape':<10} {'variant':<13} {'batch':>5} {'seq/s':>9} {'real tok/s':>11} {'MFU':>6} "
          f"{'peak GiB':>8} {'x hf':>6}")
    for r in rows:
        if "error" in r:
            print(f"{r['shape']:<10} {r['variant']:<13} {r['batch']:>5}  ERROR {r['error']}")
            continue
        peak_s = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        print(f"{r['shape']:<10} {r['variant']:<13} {r['batch']:>5} {r['seq_per_s']:>9.1f} "
              f"{r['real_tok_per_s']:>11.0f} {r['mfu']:>6.1%} {peak_s:>8} {r.get('speedup_vs_hf', float('nan')):>6.2f}")
    return result


if __name__ == "__main__":
    main()
