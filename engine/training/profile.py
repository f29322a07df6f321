"""`--profile-steps N`: profile N optimizer steps of `bertforge pretrain` with torch.profiler and report how busy the
accelerator was: "is the GPU idle between steps?" answered by measurement.

The window opens after `--profile-start` steps (default: the first log window, so autotuning and the allocator's
warm-up stay out) and closes N steps later; both ends synchronise the device. Written by rank 0:
  RUN/profile.json   window_s (wall), device_busy_s (sum of kernel time, each kernel once: self device time),
                     device_idle_frac = 1 - busy / window, steps, top 15 ops by self device (or CPU) time
  RUN/profile/trace.json   the Chrome/Perfetto trace of the window
Kernels of concurrent streams (NCCL next to compute) would be counted twice, so on several GPUs the idle share is a
lower bound. Profiling adds host overhead per op, so the idle share measured here is pessimistic. On CPU there is no
device: device_busy_s and device_idle_frac are null and the top ops are by CPU time."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from bertforge.io import atomic_dir, write_json


class StepProfiler:
    def __init__(self, run_dir: str | Path, start_step: int, n_steps: int, enabled: bool):
        self.run_dir, self.start, self.n = Path(run_dir), start_step, n_steps
        self.enabled = enabled and n_steps > 0
        self.prof = None
        self.t0 = 0.0
        self.cuda = torch.cuda.is_available()

    def before_step(self, step: int) -> None:
        """Call at the top of optimizer step `step` (0-based count of steps done)."""
        if not self.enabled or step != self.start or self.prof is not None:
            return
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        if self.cuda:
            torch.cuda.synchronize()
        self.prof = profile(activities=activities)
        self.prof.__enter__()
        self.t0 = time.perf_counter()

    def after_step(self, step: int) -> dict | None:
        """Call after optimizer step `step` completed (step = steps done); closes the window when it is full."""
        if self.prof is None or step != self.start + self.n:
            return None
        if self.cuda:
            torch.cuda.synchronize()
        window = time.perf_counter() - self.t0
        self.prof.__exit__(None, None, None)
        summary = summarize(self.prof, window, self.n, self.cuda)
        with atomic_dir(self.run_dir / "profile") as trace_dir:
            self.prof.export_chrome_trace(str(trace_dir / "trace.json"))
        self.prof = None
        self.enabled = False
        write_json(self.run_dir / "profile.json", summary)
        return summary


def summarize(prof, window_s: float, steps: int, cuda: bool) -> dict:
    averages = prof.key_averages()
    if cuda:
        busy_us = sum(e.self_device_time_total for e in averages)
        key = "self_device_time_total"
    else:
        busy_us = None
        key = "self_cpu_time_total"
    top = sorted(averages, key=lambda e: getattr(e, key), reverse=True)[:15]
    return {"steps": steps, "window_s": window_s, "step_s": window_s / steps,
            "device_busy_s": busy_us / 1e6 if busy_us is not None else None,
            "device_idle_frac": max(0.0, 1.0 - busy_us / 1e6 / window_s) if busy_us is not None else None,
            "top_ops": [{"name": e.key, "calls": e.count, f"{key}_ms": getattr(e, key) / 1e3} for e in top]}
