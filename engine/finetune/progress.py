"""Progress of long finetuning work (training steps, predict over a large file) on rank 0, through the one
progress reporter of engine/progress.py: a tqdm bar when stderr is a terminal, and otherwise one plain line every
`every_s` seconds (done / total, values, rate, ETA), so that a log file with stderr redirected stays readable."""
from __future__ import annotations

from bertforge.progress import progress


class Progress:
    """`update(n, **postfix)` advances by n units (steps, bytes, ...) of `total` (None: unknown) and shows the
    postfix values. Disabled: every call does nothing."""

    def __init__(self, total: float | None, desc: str, unit: str = "step", enabled: bool = True,
                 every_s: float = 30.0, initial: float = 0, unit_scale: bool = False, bar: bool = True):
        self.bar = progress(total, desc, initial=initial, unit=unit, enabled=enabled, every_s=every_s, leave=False,
                            unit_scale=unit_scale, bar=bar)

    def update(self, n: float = 1, **postfix) -> None:
        if self.bar is None:
            return
        if postfix:
            self.bar.set_postfix(refresh=False, **{k: (f"{v:.4g}" if isinstance(v, float) else v)
                                                   for k, v in postfix.items()})
        self.bar.update(n)

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
