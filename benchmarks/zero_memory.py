"""Per-rank memory of parameters, gradients and optimizer state under DeepSpeed ZeRO 0/1/2/3, measured, against the
ZeRO paper's accounting (Rajbhandari et al. 2020, section 3: mixed precision holds 2 + 2 + 12 bytes a parameter —
bf16/fp16 parameters, bf16/fp16 gradients, fp32 master copy + Adam's two moments; stage 1 partitions the 12, stage
2 also the gradients, stage 3 also the parameters, over the N data-parallel ranks).

One configuration at a time (stage, ranks): N spawned processes in a gloo group build BertForPreTraining, wrap it
with bertforge.deepspeed.initialize (bf16: fp16 is not available on CPU; our torch AdamW as client optimizer) and
take one optimizer step on a tiny batch, so every buffer DeepSpeed allocates exists. Each rank then sums the bytes of
the tensors it holds, walking the module and the DeepSpeed optimizer object (lists, dicts, nested optimizers),
counting each storage once (views into flat buffers share one):
  parameters   the module's parameter storages (under ZeRO 3 the rank's `ds_tensor` partitions; the gathered
               full tensors are freed after use)
  gradients    `.grad` of the module parameters and every DeepSpeed buffer whose attribute name says grad
               (flat gradient buffers, partitions, the reduce buckets)
  optimizer    Adam's exp_avg / exp_avg_sq (the client optimizer's state) and the fp32 master partitions
  buckets      DeepSpeed's gradient reduce buckets (`ipg` buffers: reduce_bucket_size elements, independent of the
               model; 5e8 bf16 = 1 GB by default at ZeRO 3), outside the paper's accounting; set to BUCKET = 2e7 elements
               here so that 4 ranks fit the shared 24 GB machine
Parameters and optimizer are read after the step, gradients after backward (before the step frees them); each
category's maximum of the two readings is reported, the largest over the ranks.
and the process's peak RSS (ru_maxrss; includes torch + DeepSpeed code, ~0.3-0.5 GB) for reference.

Usage: python benchmarks/zero_memory.py [--preset bert-base] [--layers 2] [--vocab 8192] [--stages 0,1,2,3]
           [--worlds 1,2,4] [--out benchmarks/results/zero_memory_cpu.json]
Output: a table (MB per rank, measured / theory) and the JSON."""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402
from _ranks import run_ranks  # noqa: E402

from bertforge.io import write_json  # noqa: E402

MB = 1e6
BUCKET = 20_000_000  # elements of DeepSpeed's reduce / all-gather buckets (default 5e8: 1 GB a rank at ZeRO 3)


def theory(n_params: int, stage: int, world: int) -> dict:
    """ZeRO paper bytes per rank for mixed precision with Adam: params 2, grads 2, optimizer 12 (per parameter)."""
    p, g, o = 2.0 * n_params, 2.0 * n_params, 12.0 * n_params
    return {"parameters": p / world if stage >= 3 else p, "gradients": g / world if stage >= 2 else g,
            "optimizer": o / world if stage >= 1 else o}


def _tensors(obj, name: str, depth: int, out: list, seen: set) -> None:
    """(attribute name, tensor) pairs reachable from `obj` through attributes, lists, tuples and dicts."""
    if isinstance(obj, torch.Tensor):
        out.append((name, obj))
        if obj.grad is not None:
            out.append((name + ".grad", obj.grad))
        if hasattr(obj, "ds_tensor"):
            out.append((name + ".ds_tensor", obj.ds_tensor))
        return
    if depth == 0 or id(obj) in seen or isinstance(obj, (str, bytes, int, float, bool, type(None))):
        return
    seen.add(id(obj))
    if isinstance(obj, dict):
        for k, v in obj.items():
            _tensors(v, f"{name}.{k}" if isinstance(k, str) else name, depth - 1, out, seen)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _tensors(v, name, depth - 1, out, seen)
    elif isinstance(obj, torch.optim.Optimizer) or type(obj).__module__.startswith("deepspeed"):
        for k, v in vars(obj).items():
            if k in ("module", "model", "_modules", "timers", "loss_scaler", "ds_config", "_config"):
                continue
            _tensors(v, f"{name}.{k}", depth - 1, out, seen)


def held_bytes(engine) -> dict:
    """{category: bytes} of the tensors this rank holds (each storage counted once; first category wins)."""
    counted: dict[int, str] = {}
    sizes = {"parameters": 0, "gradients": 0, "optimizer": 0, "buckets": 0, "other": 0}

    def add(category: str, t: torch.Tensor) -> None:
        if t.device.type == "meta":
            return
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if storage.nbytes() == 0 or key in counted:
            return
        counted[key] = category
        sizes[category] += storage.nbytes()

    for p in engine.module.parameters():
        add("parameters", p.ds_tensor if hasattr(p, "ds_tensor") else p)
    for p in engine.module.parameters():
        if p.grad is not None:
            add("gradients", p.grad)
    opt = engine.optimizer
    inner = getattr(opt, "optimizer", opt)
    for state in inner.state.values():
        for t in state.values():
            if isinstance(t, torch.Tensor):
                add("optimizer", t)
    for group in inner.param_groups:  # what the client optimizer steps: fp32 masters (or the parameters)
        for t in group["params"]:
            add("optimizer", t)
    found: list = []
    _tensors(opt, "optimizer", 6, found, set())
    for name, t in sorted(found, key=lambda x: "grad" not in x[0].lower()):  # grads first: a master's .grad
        low = name.lower()
        add("buckets" if ("ipg" in low or "bucket" in low) else "gradients" if "grad" in low else
            "optimizer" if ("fp32" in low or "state" in low or "master" in low) else "other", t)
    return sizes


def _rank(rank: int, world: int, store: str, args, queue) -> None:
    torch.set_num_threads(1)
    os.environ.update(LOCAL_RANK=str(rank), RANK=str(rank), WORLD_SIZE=str(world))
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    from bertforge import deepspeed as bds
    from bertforge.config import preset
    from bertforge.heads import BertForPreTraining

    torch.manual_seed(0)
    cfg = preset(args.preset, vocab_size=args.vocab, num_hidden_layers=args.layers)
    model = BertForPreTraining(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    ds_config = bds.build_ds_config(micro_batch=2, global_batch=2 * world, grad_accum=1, max_grad_norm=1.0,
                                    zero_stage=args.stage, precision="bf16",
                                    user={"zero_optimization": {"reduce_bucket_size": BUCKET,
                                                                "allgather_bucket_size": BUCKET}})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    engine = bds.initialize(model, opt, ds_config)
    g = torch.Generator().manual_seed(rank)
    ids = torch.randint(5, args.vocab, (2, 32), generator=g)
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    out = engine(ids, torch.zeros_like(ids), torch.ones_like(ids), mlm_labels=labels,
                 next_sentence_label=torch.zeros(2, dtype=torch.long))
    engine.backward(out.loss)
    after_backward = held_bytes(engine)  # gradients live from backward to the step
    engine.step()
    sizes = {k: max(v, after_backward[k]) for k, v in held_bytes(engine).items()}
    sizes["optimizer_class"] = type(engine.optimizer).__name__
    sizes["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sizes["n_params"] = n_params
    queue.put((rank, sizes))


def measure(args) -> dict:
    return run_ranks(_rank, args.world, (args,), timeout_s=900)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="bert-base")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--stages", default="0,1,2,3")
    ap.add_argument("--worlds", default="1,2,4")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "zero_memory_cpu.json"))
    args = ap.parse_args()
    rows = []
    print(f"{'stage':>5} {'ranks':>5} | {'params MB':>17} | {'grads MB':>17} | {'optimizer MB':>17} | "
          f"{'total MB':>17} | {'bucket':>6} | {'other':>6} | {'RSS MB':>6} | s | DeepSpeed optimizer")
    for stage in map(int, args.stages.split(",")):
        for world in map(int, args.worlds.split(",")):
            args.stage, args.world = stage, world
            t0 = time.monotonic()
            ranks = measure(args)
            seconds = time.monotonic() - t0
            r0 = ranks[0]
            n = r0["n_params"]
            th = theory(n, stage, world)
            cats = ("parameters", "gradients", "optimizer")
            worst = {c: max(ranks[r][c] for r in ranks) for c in (*cats, "buckets", "other", "peak_rss")}
            row = dict(stage=stage, ranks=world, n_params=n, optimizer_class=r0["optimizer_class"],
                       measured_max_rank={c: worst[c] for c in cats}, buckets=worst["buckets"], other=worst["other"],
                       theory=th, peak_rss=worst["peak_rss"], per_rank={str(r): ranks[r] for r in sorted(ranks)})
            rows.append(row)
            cell = " | ".join(f"{worst[c] / MB:7.1f} / {th[c] / MB:7.1f}" for c in cats)
            total = sum(worst[c] for c in cats), sum(th.values())
            print(f"{stage:>5} {world:>5} | {cell} | {total[0] / MB:7.1f} / {total[1] / MB:7.1f} | "
                  f"{worst['buckets'] / MB:6.0f} | {worst['other'] / MB:6.1f} | {worst['peak_rss'] / MB:6.0f} | "
                  f"{seconds:.0f} | {r0['optimizer_class']}", flush=True)
    write_json(args.out, dict(
        benchmark="zero_memory", date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        load_average=os.getloadavg(), torch=torch.__version__, precision="bf16 (fp16 unavailable on CPU)",
        model=dict(preset=args.preset, layers=args.layers, vocab=args.vocab), unit="bytes per rank (max over ranks)",
        theory="ZeRO paper: 2 (bf16 params) + 2 (bf16 grads) + 12 (fp32 master + Adam m, v) bytes/parameter; "
               "stage 1 divides the 12 by N, stage 2 also the grads, stage 3 also the params",
        rows=rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
