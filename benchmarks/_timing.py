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
