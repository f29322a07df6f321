"""Timing shared by the kernel benchmarks: median milliseconds of a closure, with triton's do_bench (CUDA events,
L2 flush) on a GPU and perf_counter after one warm-up call on the CPU (tiny shapes; the numbers there only show
the script works)."""
from __future__ import annotations

import statistics
import time

import torch


def median_ms(fn, reps: int | None = None, cpu_reps: int = 3) -> float:
    if torch.cuda.is_available():
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=5, rep=40 if reps is None else reps, return_mode="median"))
    fn()
    times = []
    for _ in range(reps or cpu_reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def run_child(cmd: list[str], env: dict, timeout: float) -> dict:
    """Run one measurement in its own process: its result is the JSON after `RESULT ` on a stdout line, else
    {'error': its last stderr line} (or the timeout); 'load_avg' is the 1-minute load average seen before it."""
    import json
    import os
    import subprocess

    load = os.getloadavg()[0]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        r = json.loads(line[7:]) if line else {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    except subprocess.TimeoutExpired:
        r = {"error": f"timed out after {timeout:.0f} s"}
    r["load_avg"] = load
    return r
