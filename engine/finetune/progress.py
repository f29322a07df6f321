"""Progress of long finetuning work (training steps, predict over a large file) on rank 0: a tqdm bar when stderr
is a terminal, and otherwise one plain line every `every_s` seconds (done / total, rate, ETA), so that a log file
with stderr redirected stays readable instead of holding one endless carriage-return line."""
from __future__ import annotations

import sys
import time


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """`update(n)` advances by n units (steps, bytes, ...) of `total` (None: unknown); `postfix` values are shown
    with the bar or appended to the line. Disabled: every call does nothing."""

    def __init__(self, total: float | None, desc: str, unit: str = "step", enabled: bool = True,
                 every_s: float = 30.0, initial: float = 0, unit_scale: bool = False, stream=None):
        self.stream = stream or sys.stderr
        self.enabled, self.total, self.desc, self.unit, self.every_s = enabled, total, desc, unit, every_s
        self.done, self.start_done, self.postfix = initial, initial, {}
        self.t0 = self.last = time.perf_counter()
        self.unit_scale = unit_scale
        self.bar = None
        if enabled and self.stream.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit_scale, leave=False,
                            dynamic_ncols=True, file=self.stream)

    def update(self, n: float = 1, **postfix) -> None:
        if not self.enabled:
            return
        self.done += n
        if postfix:
            self.postfix = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()}
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(self.postfix, refresh=False)
            return
        now = time.perf_counter()
        if now - self.last >= self.every_s:
            self.last = now
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        """The plain progress line: 'DESC: done/total unit (x%), rate/s, elapsed, ETA, postfix'."""
        now = time.perf_counter() if now is None else now
        elapsed = now - self.t0
        rate = (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0
        fmt = (lambda v: f"{v / 1e6:.1f}M") if self.unit_scale else (lambda v: f"{v:.0f}")
        text = f"{self.desc}: {fmt(self.done)}"
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            text += (f"/{fmt(self.total)} {self.unit} ({self.done / self.total:.0%}), {rate:.3g} {self.unit}/s, "
                     f"elapsed {_duration(elapsed)}, ETA {_duration(eta) if rate > 0 else '?'}")
        else:
            text += f" {self.unit}, {rate:.3g} {self.unit}/s, elapsed {_duration(elapsed)}"
        if self.postfix:
            text += ", " + ", ".join(f"{k} {v}" for k, v in self.postfix.items())
        return text

    def write(self, message: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            self.stream.write(message + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
