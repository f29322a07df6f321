"""Progress of long work, readable on a terminal and in a log file alike.

On a terminal (stderr is a TTY) `progress(...)` is a tqdm bar. Anywhere else — stderr redirected to a file, a SLURM
log, a pipe — a bar redraws itself with carriage returns into one enormous line, so a `LineProgress` writes instead
one plain, complete line at most every `every_s` seconds and at the end: `desc: 120/800 (15%) | loss=6.12 ... |
elapsed 1:02 | ETA 5:40`, the form training logs take in Megatron and the Hugging Face Trainer. `Progress` is the one
reporter every command uses (`progress(...)` gives a `NullProgress` where it is disabled): update(n, **postfix),
write(message), close()."""
from __future__ import annotations

import sys
import time
from typing import TextIO


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether `stream` (default stderr) is an interactive terminal."""
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _scaled(value: float) -> str:
    """1234567 -> '1.23M' (tqdm's unit_scale)."""
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


class LineProgress:
    """Plain progress lines for logs: at most one every `every_s` seconds, and one when closed."""

    def __init__(self, total: int | None, desc: str, initial: int = 0, unit: str = "it", every_s: float = 30.0,
                 stream: TextIO | None = None, unit_scale: bool = False):
        self.total, self.desc, self.n, self.unit, self.every_s = total, desc, initial, unit, every_s
        self.count = _scaled if unit_scale else str  # unit_scale: 12.3M B rather than 12345678 B
        self.stream = stream or sys.stderr
        self.start_n, self.t0 = initial, time.perf_counter()
        self.last_print = self.t0
        self.postfix: dict = {}
        self.closed = False

    def line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        done = self.n - self.start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        head = f"{self.desc}: {self.count(self.n)}" + (
            f"/{self.count(self.total)} ({self.n / self.total:.0%})" if self.total else "")
        parts = [head] + [f"{k}={_fmt(v)}" for k, v in self.postfix.items()]
        parts.append(f"{_scaled(rate) if self.count is _scaled else f'{rate:.3g}'} {self.unit}/s")
        parts.append(f"elapsed {_clock(elapsed)}")
        if self.total and rate > 0:
            parts.append(f"ETA {_clock((self.total - self.n) / rate)}")
        return " | ".join(parts)

    def _emit(self) -> None:
        self.write(self.line())
        self.last_print = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.perf_counter() - self.last_print >= self.every_s:
            self._emit()

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = dict(values)

    def write(self, message: str) -> None:
        self.stream.write(message + "\n")
        self.stream.flush()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._emit()


class NullProgress:
    """The reporter where progress is off (ranks other than 0, a disabled bar): every call does nothing."""

    def update(self, n: float = 1, **postfix) -> None:
        pass

    def write(self, message: str) -> None:
        pass

    def close(self) -> None:
        pass


class Progress:
    """The one progress reporter of long work: a tqdm bar on a terminal (unless `bar` is False), plain `LineProgress`
    lines otherwise. `update(n, **postfix)` advances by n units (steps, bytes, ...) of `total` (None: unknown) and
    shows the postfix values (floats as 4 significant digits); `write` prints a line above the bar."""

    def __init__(self, total: float | None, desc: str, *, unit: str = "it", initial: float = 0, every_s: float = 30.0,
                 leave: bool = True, unit_scale: bool = False, bar: bool = True):
        if bar and is_terminal():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=leave,
                            file=sys.stderr, unit_scale=unit_scale)
        else:
            self.bar = LineProgress(total, desc, initial=initial, unit=unit, every_s=every_s, unit_scale=unit_scale)

    def update(self, n: float = 1, **postfix) -> None:
        if self.bar is None:  # closed
            return
        if postfix:
            self.bar.set_postfix(refresh=False, **{k: _fmt(v) for k, v in postfix.items()})
        self.bar.update(n)

    def write(self, message: str) -> None:
        (self.bar or LineProgress(None, "")).write(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def progress(total: float | None, desc: str, *, enabled: bool = True, **options) -> Progress | NullProgress:
    """A `Progress` (options: its keyword arguments), or a `NullProgress` when not `enabled`."""
    return Progress(total, desc, **options) if enabled else NullProgress()
