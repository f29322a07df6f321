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
Each side runs in its own process (one shape and side at a time): examples/s is the micro batch over the median
wall time of an optimizer step after `--warmup` steps (CUDA synchronised), peak memory is the device's
max_memory_allocated on a GPU and the process' peak RSS on the CPU. Output: a JSON file (--out) and a table.

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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHAPES = {"tiny-64": ("tiny", 64), "minilm-128": ("minilm-l6", 128), "base-128": ("bert-base", 128),
          "base-512": ("bert-base", 512), "large-128": ("bert-large", 128)}
VARIANTS = ("hf", "ours")


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


def measure_hf(cfg, feats: list[dict], batch: int, steps: int, warmup: int, precision: str) -> list[float]:
    """Wall seconds of each optimizer step of the transformers Trainer (a callback stamps the step ends)."""
    import torch
    import transformers

    model = transformers.BertForSequenceClassification._from_config(
        transformers.BertConfig(**cfg.to_hf_config(), num_labels=2), attn_implementation="sdpa")
    stamps: list[float] = []

    class Stamp(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if not stamps:
                _sync()
                stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            _sync()
            stamps.append(time.perf_counter())

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
    return [b - a for a, b in zip(stamps, stamps[1:])]


def measure_ours(cfg, feats: list[dict], batch: int, steps: int, warmup: int, precision: str) -> list[float]:
    """Wall seconds of each optimizer step of the runtime's Trainer.train_step (the DeepSpeed engine) on the
    finetuning task."""
    import torch

    from bertforge import deepspeed as ds
    from bertforge.config.finetune import FinetuneConfig, ParallelConfig
    from bertforge.finetuning.tasks import ClassifyTask
    from bertforge.finetuning.trainer import seed_trainer
    from bertforge import distributed as D

    kernels = "triton" if torch.cuda.is_available() else "none"
    args = FinetuneConfig(lr=2e-5, epochs=1, global_batch=batch, micro_batch=batch, dropout=0.1, progress=False)
    par = ParallelConfig(precision=precision, kernels=kernels)
    D.prepare_env()
    ds.init_distributed(par.dist_timeout_s)
    task = ClassifyTask(["a", "b"], max(len(f["input_ids"]) for f in feats), train=feats)
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        trainer = seed_trainer(task, cfg.replace(kernels=kernels), None, args, 0, Path(tmp), par,
                               echo=lambda s: None)
        trainer.setup()
        trainer.engine.train()
        with D.Preemption() as preempt:
            for _ in range(warmup + steps):
                _sync()
                t0 = time.perf_counter()
                _, applied, _, _ = trainer.train_step(False, lambda: preempt.flag)
                trainer.step += 1
                if applied:
                    trainer.scheduler.step()
                _sync()
                times.append(time.perf_counter() - t0)
    return times


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
    times = measure(cfg, feats, batch, steps, warmup, precision)[warmup:]
    step_s = statistics.median(times)
    real = sum(len(f["input_ids"]) for f in feats) / len(feats) * batch
    return {"shape": shape, "variant": variant, "batch": batch, "seq": seq, "precision": precision,
            "step_s": step_s, "examples_per_s": batch / step_s, "real_tokens_per_s": real / step_s,
            "peak_mib": _peak_mib(), "steps_timed": len(times)}


TABLE_HEAD = f"{'shape':<11} {'prec':<5} {'variant':<6} {'batch':>5} {'examples/s':>11} {'peak MiB':>9} {'x hf':>6}"


def table_row(r: dict) -> str:
    head = f"{r['shape']:<11} {r['precision']:<5} {r['variant']:<6} {r['batch']:>5}"
    if "error" in r:
        return f"{head}  ERROR {r['error']}"
    return (f"{head} {r['examples_per_s']:>11.1f} {r['peak_mib']:>9.0f} "
            f"{r.get('speedup_vs_hf', float('nan')):>6.2f}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="tiny-64", help=f"comma list of {', '.join(SHAPES)}")
    p.add_argument("--variants", default="hf,ours")
    p.add_argument("--batch", type=int, default=8, help="examples per optimizer step (one micro batch)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                   help="auto: bf16 on a GPU, fp32 on CPU")
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads of each side; 0 = torch's default")
    p.add_argument("--timeout", type=float, default=900, help="seconds per measurement process")
    p.add_argument("--out", default="benchmarks/results/finetune_throughput.json")
    p.add_argument("--one", nargs=2, metavar=("SHAPE", "VARIANT"), help=argparse.SUPPRESS)
    return p


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
    if set(variants) - set(VARIANTS) or any(s not in SHAPES for s in args.shapes.split(",")):
        parser.error(f"variants: {', '.join(VARIANTS)}; shapes: {', '.join(SHAPES)}")
    result = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "precision": precision,
              "threads": args.threads or torch.get_num_threads(), "rows": []}
    print(f"device {result['device']}  {precision}", flush=True)
    print(TABLE_HEAD, flush=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for shape in args.shapes.split(","):
        for variant in variants:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--one", shape, variant, "--batch", str(args.batch),
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--precision", precision,
                   "--vocab", str(args.vocab), "--threads", str(args.threads)]
            try:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
                line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
                r = json.loads(line[7:]) if line else {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
            except subprocess.TimeoutExpired:
                r = {"error": f"timed out after {args.timeout:.0f} s"}
            r.update(shape=shape, variant=variant, batch=args.batch, precision=precision)
            result["rows"].append(r)
            _save(result, Path(args.out))  # after every row: a run cut short keeps what it measured
            print(table_row(r), flush=True)
    return result


def _save(result: dict, out: Path) -> None:
    rows = result["rows"]
    for r in rows:
        base = next((x for x in rows if x["shape"] == r["shape"] and x["variant"] == "hf" and "step_s" in x), None)
        if base and "step_s" in r:
            r["speedup_vs_hf"] = r["examples_per_s"] / base["examples_per_s"]
    from bertforge.io import write_json

    write_json(out, result)  # atomic, parent folders made


if __name__ == "__main__":
    main()
