"""Question: how fast is a `bertforge finetune` training step against the Hugging Face `Trainer`, at the same model,
batch, precision and sequence length? Examples/s, peak memory, and the ratio, measured in the same run.

Task: sequence classification (2 classes) of synthetic examples whose lengths are drawn uniformly from [S/4, S]
([CLS] ... [SEP], random ids), the same examples for both sides, randomly initialised weights of the preset.
  hf    transformers `Trainer` with BertForSequenceClassification (SDPA attention), batches padded to their longest
        example (a multiple of 8, as DataCollatorWithPadding(pad_to_multiple_of=8)), `bf16=True` autocast or fp32,
        torch AdamW (fused on GPU), warmup + linear decay, clipping 1.0: what users run
  ours  the step of `bertforge finetune classify` itself (the runtime's Trainer.train_step, engine/train/trainer.py):
        the DeepSpeed engine built by engine/parallelize.py, ZeRO 0, bf16 (DeepSpeed's) or fp32, unpadded batches,
        Triton kernels on a GPU (--kernels none on CPU), client AdamW, clipping 1.0
  ours-*  ablations of `ours`, each with one piece switched back to what it replaced:
        ours-padded      --no-unpadded: batches padded to their longest example (as the Trainer's)
        ours-repad       the CPU attention re-pads unpadded batches to (B, max_seqlen) and masks
                         (bertforge.kernels.reference.VARLEN_PER_SEQUENCE_ON_CPU = False; with the per-example
                         dropout keys that is the naive attention with the (B, nh, S, S) Philox mask, SDPA taking
                         no mask; CPU only: on a GPU the Triton kernel reads unpadded batches itself, so this row
                         equals `ours` there)
        ours-ds-clip     DeepSpeed's per-parameter gradient clipping (+ its norm all-reduce) instead of torch's
                         foreach clip_grad_norm_ (bertforge.deepspeed.apply_foreach_clipping)
        ours-foreach     torch's multi-tensor AdamW instead of the fused one (build_optimizer(fused=False))
        ours-full-last-layer  the last encoder layer on every token (ModelConfig.last_layer_subset=False) instead
                         of the [CLS] rows only
Each variant runs in its own process (one shape and variant at a time): examples/s is the micro batch over the
median wall time of an optimizer step after `--warmup` steps (CUDA synchronised); cpu_step_s the median process CPU
time of a step (all of the process' threads: with --threads 1 the work itself, robust to a loaded machine); peak
memory is the device's max_memory_allocated on a GPU and the process' peak RSS on the CPU. `--repeats R` runs the
variants R times interleaved (the order rotates every round), so each round's ratios are same-load ratios; the
summary gives per variant the median examples/s and the median over rounds of the round's ratio to hf (wall and
CPU time), with the 1-minute load average seen before each process. Output: a JSON file (--out) and tables.

On a shared CPU (the numbers of benchmarks/RESULTS.md):
    python benchmarks/finetune_throughput.py --shapes tiny-64,minilm-128 --batch 16 --threads 1 --steps 10 \
        --warmup 3 --repeats 3 --variants hf,ours,ours-padded,ours-repad,ours-ds-clip,ours-foreach

On CPU the tiny shape runs so CI exercises it (tests/benchmarks/test_finetune_throughput_cli.py):
    python benchmarks/finetune_throughput.py --shapes tiny-64 --batch 8 --steps 3 --warmup 1
On the GPU (benchmarks/gpu_check.sh, with DeepSpeed carried there):
    python benchmarks/finetune_throughput.py --shapes base-128,large-128 --batch 32 --precision bf16"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from _timing import run_child  # noqa: E402  (benchmarks/: the script's own folder)

SHAPES = {"tiny-64": ("tiny", 64), "minilm-128": ("minilm-l6", 128), "base-128": ("bert-base", 128),
          "base-512": ("bert-base", 512), "large-128": ("bert-large", 128)}
VARIANTS = ("hf", "ours", "ours-padded", "ours-repad", "ours-ds-clip", "ours-foreach", "ours-full-last-layer")


def examples(n: int, seq: int, vocab: int, seed: int = 0) -> list[dict]:
    """n classification features, lengths uniform in [seq / 4, seq], ids in [5, vocab)."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(max(4, seq // 4), seq)
        ids = [2] + [rng.randrange(5, vocab) for _ in range(length - 2)] + [3]
        out.append({"input_ids": ids, "token_type_ids": [0] * length, "labels": rng.randrange(2)})
    return out


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_mib() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_hf(cfg, feats: list[dict], batch: int, steps: int, warmup: int, precision: str,
               variant: str = "hf") -> tuple[list[float], list[float]]:
    """(wall, process CPU) seconds of each optimizer step of the transformers Trainer (a callback stamps the step
    ends)."""
    import torch
    import transformers

    model = transformers.BertForSequenceClassification._from_config(
        transformers.BertConfig(**cfg.to_hf_config(), num_labels=2), attn_implementation="sdpa")
    stamps: list[tuple[float, float]] = []

    class Stamp(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if not stamps:
                _sync()
                stamps.append((time.perf_counter(), time.process_time()))

        def on_step_end(self, args, state, control, **kw):
            _sync()
            stamps.append((time.perf_counter(), time.process_time()))

    def collate(rows):
        width = -(-max(len(r["input_ids"]) for r in rows) // 8) * 8
        pad = lambda seq, v: seq + [v] * (width - len(seq))  # noqa: E731
        return {"input_ids": torch.tensor([pad(r["input_ids"], 0) for r in rows]),
                "token_type_ids": torch.tensor([pad(r["token_type_ids"], 0) for r in rows]),
                "attention_mask": torch.tensor([pad([1] * len(r["input_ids"]), 0) for r in rows]),
                "labels": torch.tensor([r["labels"] for r in rows])}

    with tempfile.TemporaryDirectory() as tmp:
        targs = transformers.TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=batch, max_steps=warmup + steps, learning_rate=2e-5,
            warmup_steps=max(1, (warmup + steps) // 10), lr_scheduler_type="linear", weight_decay=0.01, max_grad_norm=1.0,
            bf16=precision == "bf16", use_cpu=not torch.cuda.is_available(), save_strategy="no", report_to=[],
            logging_steps=10 ** 9, disable_tqdm=True, dataloader_num_workers=0, seed=0)
        trainer = transformers.Trainer(model=model, args=targs, train_dataset=feats, data_collator=collate,
                                       callbacks=[Stamp()])
        trainer.train()
    return ([b[0] - a[0] for a, b in zip(stamps, stamps[1:])], [b[1] - a[1] for a, b in zip(stamps, stamps[1:])])


def _ablate(variant: str) -> dict:
    """Switch the piece the ablation `variant` names back to what it replaced, before the trainer is built.
    Returns FinetuneConfig overrides."""
    import functools

    from bertforge import deepspeed as ds
    from bertforge.train import trainer as runtime
    from bertforge.kernels import reference

    if variant == "ours-padded":
        return {"unpadded": False}
    if variant == "ours-repad":
        reference.VARLEN_PER_SEQUENCE_ON_CPU = False
    elif variant == "ours-ds-clip":
        ds.apply_foreach_clipping = lambda engine: False
    elif variant == "ours-foreach":
        build = runtime.build_optimizer  # the runtime passes fused= itself: force it off
        runtime.build_optimizer = functools.wraps(build)(lambda *a, **k: build(*a, **{**k, "fused": False}))
    elif variant not in ("ours", "ours-full-last-layer"):  # the latter: measure_ours builds the model config
        raise ValueError(f"unknown variant {variant!r}")
    return {}


def measure_ours(cfg, feats: list[dict], batch: int, steps: int, warmup: int, precision: str,
                 variant: str = "ours") -> tuple[list[float], list[float]]:
    """(wall, process CPU) seconds of each optimizer step of the runtime's Trainer.train_step (the DeepSpeed engine)
    on the finetuning task."""
    import torch

    from bertforge import deepspeed as ds
    from bertforge.config.finetune import FinetuneConfig, ParallelConfig
    from bertforge.finetuning.tasks import ClassifyTask
    from bertforge.finetuning.trainer import seed_trainer
    from bertforge import distributed as D

    kernels = "triton" if torch.cuda.is_available() else "none"
    overrides = _ablate(variant)
    args = FinetuneConfig(lr=2e-5, epochs=1, global_batch=batch, micro_batch=batch, dropout=0.1, progress=False,
                          **overrides)
    par = ParallelConfig(precision=precision, kernels=kernels)
    D.prepare_env()
    ds.init_distributed(par.dist_timeout_s)
    task = ClassifyTask(["a", "b"], max(len(f["input_ids"]) for f in feats), train=feats)
    times, cpu = [], []
    with tempfile.TemporaryDirectory() as tmp:
        # as run_classify builds it: with [CLS] pooling the last layer on the [CLS] rows only
        model_cfg = cfg.replace(kernels=kernels, last_layer_subset=variant != "ours-full-last-layer")
        trainer = seed_trainer(task, model_cfg, None, args, 0, Path(tmp), par,
                               echo=lambda s: None)
        trainer.setup()
        trainer.engine.train()
        with D.Preemption() as preempt:
            for _ in range(warmup + steps):
                _sync()
                t0, c0 = time.perf_counter(), time.process_time()
                _, applied, _, _ = trainer.train_step(False, lambda: preempt.flag)
                trainer.step += 1
                if applied:
                    trainer.scheduler.step()
                _sync()
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
    return times, cpu


def run_one(shape: str, variant: str, batch: int, steps: int, warmup: int, precision: str, vocab: int,
            threads: int = 0) -> dict:
    import torch

    from bertforge.config import preset

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    name, seq = SHAPES[shape]
    cfg = preset(name, vocab_size=vocab)
    feats = examples(batch * (warmup + steps), seq, vocab)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    measure = measure_hf if variant == "hf" else measure_ours
    times, cpu = measure(cfg, feats, batch, steps, warmup, precision, variant)
    times, cpu = times[warmup:], cpu[warmup:]
    step_s = statistics.median(times)
    real = sum(len(f["input_ids"]) for f in feats) / len(feats) * batch
    return {"shape": shape, "variant": variant, "batch": batch, "seq": seq, "precision": precision,
            "step_s": step_s, "cpu_step_s": statistics.median(cpu), "examples_per_s": batch / step_s,
            "real_tokens_per_s": real / step_s, "peak_mib": _peak_mib(), "steps_timed": len(times)}


TABLE_HEAD = (f"{'shape':<11} {'prec':<5} {'variant':<20} {'batch':>5} {'examples/s':>11} {'cpu ms':>8} "
              f"{'peak MiB':>9} {'x hf':>6} {'load':>5}")
SUMMARY_HEAD = (f"{'shape':<11} {'variant':<20} {'rounds':>6} {'examples/s':>11} {'x hf wall':>10} {'x hf cpu':>9} "
                f"{'load':>9}")


def table_row(r: dict) -> str:
    head = f"{r['shape']:<11} {r['precision']:<5} {r['variant']:<20} {r['batch']:>5}"
    if "error" in r:
        return f"{head}  ERROR {r['error']}"
    nan = float("nan")
    return (f"{head} {r['examples_per_s']:>11.1f} {r.get('cpu_step_s', nan) * 1e3:>8.1f} {r['peak_mib']:>9.0f} "
            f"{r.get('speedup_vs_hf', nan):>6.2f} {r.get('load_avg', nan):>5.1f}")


def summary_row(r: dict) -> str:
    load = f"{r['load_min']:.1f}-{r['load_max']:.1f}"
    return (f"{r['shape']:<11} {r['variant']:<20} {r['rounds']:>6} {r['examples_per_s']:>11.1f} "
            f"{r.get('speedup_vs_hf', float('nan')):>10.2f} {r.get('cpu_speedup_vs_hf', float('nan')):>9.2f} {load:>9}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="tiny-64", help=f"comma list of {', '.join(SHAPES)}")
    p.add_argument("--variants", default="hf,ours", help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--batch", type=int, default=8, help="examples per optimizer step (one micro batch)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1, help="rounds of all variants, interleaved (same-load ratios)")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                   help="auto: bf16 on a GPU, fp32 on CPU")
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads of each side; 0 = torch's default")
    p.add_argument("--timeout", type=float, default=900, help="seconds per measurement process")
    p.add_argument("--out", default="benchmarks/results/finetune_throughput.json")
    p.add_argument("--one", nargs=2, metavar=("SHAPE", "VARIANT"), help=argparse.SUPPRESS)
    return p


def _measure_in_child(shape: str, variant: str, args, precision: str, env: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", shape, variant, "--batch", str(args.batch),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--precision", precision,
           "--vocab", str(args.vocab), "--threads", str(args.threads)]
    r = run_child(cmd, env, args.timeout)
    r.update(shape=shape, variant=variant, batch=args.batch, precision=precision)
    return r


def main(argv=None) -> dict | None:
    parser = build_parser()
    args = parser.parse_args(argv)
    import torch

    precision = args.precision if args.precision != "auto" else ("bf16" if torch.cuda.is_available() else "fp32")
    if args.one:
        print("RESULT " + json.dumps(run_one(*args.one, args.batch, args.steps, args.warmup, precision, args.vocab,
                                             args.threads)))
        return None
    variants = [v for v in args.variants.split(",") if v]
    if set(variants) - set(VARIANTS) or any(s not in SHAPES for s in args.shapes.split(",")) or args.repeats < 1:
        parser.error(f"variants: {', '.join(VARIANTS)}; shapes: {', '.join(SHAPES)}; --repeats >= 1")
    result = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "precision": precision,
              "threads": args.threads or torch.get_num_threads(), "cpus": os.cpu_count(), "repeats": args.repeats,
              "rows": [], "summary": []}
    print(f"device {result['device']}  {precision}", flush=True)
    print(TABLE_HEAD, flush=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for shape in args.shapes.split(","):
        for rnd in range(args.repeats):
            k = rnd % len(variants)  # rotate the order: no variant always runs first (or right after another)
            for variant in variants[k:] + variants[:k]:
                r = _measure_in_child(shape, variant, args, precision, env)
                r["round"] = rnd
                result["rows"].append(r)
                _save(result, Path(args.out))  # after every row: a run cut short keeps what it measured
                print(table_row(r), flush=True)
    print("\nsummary: median over rounds; x hf = the median of each round's same-load ratio (a row printed before "
          "its round's hf row shows nan above; the JSON has every ratio)", flush=True)
    print(SUMMARY_HEAD)
    for r in result["summary"]:
        print(summary_row(r), flush=True)
    return result


def _summarise(rows: list[dict]) -> list[dict]:
    """Per (shape, variant): median examples/s over rounds, and the median over rounds of the ratio to the same
    round's hf row (wall: examples/s; cpu: hf's CPU seconds a step over the variant's)."""
    out = []
    for shape in dict.fromkeys(r["shape"] for r in rows):
        for variant in dict.fromkeys(r["variant"] for r in rows if r["shape"] == shape):
            mine = [r for r in rows if r["shape"] == shape and r["variant"] == variant and "step_s" in r]
            if not mine:
                continue
            s = {"shape": shape, "variant": variant, "rounds": len(mine),
                 "examples_per_s": statistics.median(r["examples_per_s"] for r in mine),
                 "load_min": min(r["load_avg"] for r in mine), "load_max": max(r["load_avg"] for r in mine)}
            wall = [r["speedup_vs_hf"] for r in mine if "speedup_vs_hf" in r]
            cpu = [r["cpu_speedup_vs_hf"] for r in mine if "cpu_speedup_vs_hf" in r]
            if wall:
                s["speedup_vs_hf"] = statistics.median(wall)
            if cpu:
                s["cpu_speedup_vs_hf"] = statistics.median(cpu)
            out.append(s)
    return out


def _save(result: dict, out: Path) -> None:
    rows = result["rows"]
    for r in rows:
        base = next((x for x in rows if x["shape"] == r["shape"] and x["variant"] == "hf" and "step_s" in x
                     and x.get("round") == r.get("round")), None)
        if base and "step_s" in r:
            r["speedup_vs_hf"] = r["examples_per_s"] / base["examples_per_s"]
            if base.get("cpu_step_s") and r.get("cpu_step_s"):
                r["cpu_speedup_vs_hf"] = base["cpu_step_s"] / r["cpu_step_s"]
    result["summary"] = _summarise(rows)
    from bertforge.io import write_json

    write_json(out, result)  # atomic, parent folders made


if __name__ == "__main__":
    main()
