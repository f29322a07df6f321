"""What does LAMB cost per optimizer step under ZeRO, where its trust ratios need per-parameter norms over flat
partitions (engine/optim.py `Lamb.shard`: segment sums over the pieces + one all-reduce per step call)?

Same run, same model parameters (a preset's BertForPreTraining, BERT's two parameter groups), random gradients:
  adamw_params / lamb_params   ZeRO-0: the optimizer over whole parameters (lamb: bertforge.kernels.reference.lamb_step_ref)
  adamw_flat / lamb_flat       ZeRO 1-2: each rank steps its flat fp32 partition of every group (DeepSpeed's layout:
                               parameters one after another, 16-byte aligned, split evenly over the ranks); LAMB's
                               norms go through the pieces and a gloo all-reduce over the ranks
with 1 and 2 ranks (processes), one thread each. Reported: median ms per step of the slowest rank, and ratios against
lamb_params (the unsharded LAMB step) and against AdamW on the same layout (what LAMB adds under ZeRO);
lamb_flat_allreduce is the mean time a rank spent inside the all-reduces of one step (their cost plus waiting for the
slower rank).

Usage: python benchmarks/lamb_zero.py [--preset minilm-l6] [--vocab 30522] [--reps 5] [--worlds 1,2]
Output: a table and --out JSON (default benchmarks/results/lamb_zero_cpu.json)."""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from _ranks import run_ranks  # noqa: E402

from bertforge.config import preset  # noqa: E402
from bertforge.heads import BertForPreTraining  # noqa: E402
from bertforge.io import write_json  # noqa: E402
from bertforge.optim import FlatPieces, Lamb, param_groups  # noqa: E402

ALIGN = 4  # fp32 elements per 16 bytes (DeepSpeed aligns every parameter's start)


def flat_layout(numels: list[int], world: int, rank: int) -> tuple[list[int], int, FlatPieces]:
    """Offsets of parameters of `numels` in the flat group, the partition size, and rank's pieces."""
    offsets, at = [], 0
    for n in numels:
        offsets.append(at)
        at += n + (-n) % ALIGN
    size = -(-at // (world * ALIGN)) * ALIGN
    lo, hi = rank * size, (rank + 1) * size
    starts, lens, ids = [], [], []
    for j, (off, n) in enumerate(zip(offsets, numels)):
        a, b = max(lo, off), min(hi, off + n)
        if a < b:
            starts.append(a - lo), lens.append(b - a), ids.append(j)
    return offsets, size, FlatPieces(tuple(starts), tuple(lens), tuple(ids), len(numels))


def median_step_ms(opt: torch.optim.Optimizer, reps: int, barrier) -> float:
    opt.step()  # warm-up: creates the moments
    times = []
    for _ in range(reps):
        barrier()
        t0 = time.perf_counter()
        opt.step()
        barrier()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def run_rank(rank: int, world: int, store: str, args, queue) -> None:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    barrier = dist.barrier if world > 1 else (lambda: None)
    torch.manual_seed(0)
    model = BertForPreTraining(preset(args.preset, vocab_size=args.vocab))
    groups = param_groups(model, 0.01)
    g = torch.Generator().manual_seed(1)
    rows = {}
    if world == 1:
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g) * 1e-2
        rows["adamw_params"] = median_step_ms(torch.optim.AdamW(groups, lr=1e-3, foreach=True), args.reps, barrier)
        rows["lamb_params"] = median_step_ms(Lamb(groups, lr=1e-3, use_fused=False), args.reps, barrier)
    flats = []
    for group in groups:
        numels = [p.numel() for p in group["params"]]
        offsets, size, pieces = flat_layout(numels, world, rank)
        flat = torch.zeros(size)
        for s, n, j in zip(pieces.starts, pieces.numels, pieces.param_ids):
            first = rank * size + s - offsets[j]  # the piece's first element inside its parameter
            flat[s:s + n] = group["params"][j].detach().reshape(-1)[first:first + n]
        flat.grad = torch.randn(size, generator=g) * 1e-2
        flats.append((flat, pieces, group["weight_decay"]))
    adamw = torch.optim.AdamW([{"params": [f], "weight_decay": wd} for f, _, wd in flats], lr=1e-3, foreach=True)
    rows["adamw_flat"] = median_step_ms(adamw, args.reps, barrier)
    lamb = Lamb([{"params": [f], "weight_decay": wd} for f, _, wd in flats], lr=1e-3, use_fused=False)
    waited = [0.0]  # seconds inside the all-reduce: its cost plus waiting for the slower rank

    def reduce(t: torch.Tensor) -> None:
        t0 = time.perf_counter()
        dist.all_reduce(t)
        waited[0] += time.perf_counter() - t0

    for f, pieces, _ in flats:
        lamb.shard(f, pieces, reduce if world > 1 else None)

    class PerGroup:  # DeepSpeed's ZeRO-1/2 wrapper steps one parameter group per call (one all-reduce each)
        def step(self):
            whole = lamb.param_groups
            for group in whole:
                lamb.param_groups = [group]
                lamb.step()
            lamb.param_groups = whole

    rows["lamb_flat"] = median_step_ms(PerGroup(), args.reps, barrier)
    rows["lamb_flat_allreduce"] = waited[0] * 1e3 / (args.reps + 1)  # mean over the warm-up and timed steps
    queue.put((rank, rows))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


def measure(world: int, args) -> dict:
    per_rank = [rows for _, rows in sorted(run_ranks(run_rank, world, (args,)).items())]
    return {name: max(rows[name] for rows in per_rank) for name in per_rank[0]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="minilm-l6")
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--worlds", default="1,2")
    p.add_argument("--out", default="benchmarks/results/lamb_zero_cpu.json")
    args = p.parse_args(argv)
    n_params = sum(x.numel() for x in BertForPreTraining(preset(args.preset, vocab_size=args.vocab)).parameters())
    rows = []
    for world in map(int, args.worlds.split(",")):
        ms = measure(world, args)
        for name, value in ms.items():
            rows.append({"variant": name, "ranks": world, "ms_per_step": value})
            print(f"measured {name} on {world} rank(s): {value:.1f} ms", flush=True)
    base = next((r["ms_per_step"] for r in rows if r["variant"] == "lamb_params"), None)
    for r in rows:
        r["vs_lamb_params"] = r["ms_per_step"] / base if base else None
        if r["variant"] == "lamb_flat":
            adamw = next(x["ms_per_step"] for x in rows if x["variant"] == "adamw_flat" and x["ranks"] == r["ranks"])
            r["vs_adamw_flat"] = r["ms_per_step"] / adamw
    report = {"question": "LAMB optimizer-step cost under ZeRO (per-parameter norms over flat partitions)",
              "preset": args.preset, "vocab": args.vocab, "parameters": n_params, "reps": args.reps,
              "threads_per_rank": 1, "load_average_1min": os.getloadavg()[0], "machine": f"{platform.machine()} {os.cpu_count()} CPUs "
              f"({platform.processor() or platform.platform()}), shared", "date": datetime.date.today().isoformat(),
              "torch": torch.__version__, "rows": rows}
    write_json(args.out, report)
    print(f"\n{args.preset}, {n_params / 1e6:.1f}M parameters, 1 thread per rank, median of {args.reps} steps")
    print(f"{'variant':<21}{'ranks':>6}{'ms/step':>10}{'vs lamb_params':>16}{'vs adamw_flat':>15}")
    for r in rows:
        adamw = f"{r['vs_adamw_flat']:.2f}" if "vs_adamw_flat" in r else ""
        print(f"{r['variant']:<21}{r['ranks']:>6}{r['ms_per_step']:>10.1f}{r['vs_lamb_params'] or 0:>16.2f}{adamw:>15}")
    print(f"(JSON: {args.out})")
    return report


if __name__ == "__main__":
    main()
