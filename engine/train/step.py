"""`StepGuard`: the one place a training loop decides whether an optimizer step is applied.

At the last micro batch of a step (after its backward is queued) the ranks agree, in ONE two-element all-reduce
(max), on (a) a non-finite loss on any rank: the update is vetoed on every rank through the skip gate that
`bertforge.parallelize.parallelize` returns, and (b) a stop request (a SIGTERM on any rank): every rank checkpoints
after the same step. fp16 overflows are DeepSpeed's loss scaler's (it lowers the scale and skips), so under fp16 only
the stop flag decides. Skipped steps are counted in total and in a row; `ParallelConfig.max_skipped_steps` in a row
stop training with a TrainingError."""
from __future__ import annotations

from typing import Callable

import torch

from bertforge import distributed as D
from bertforge.errors import TrainingError
from bertforge.parallelize import SkipGate


class StepGuard:
    """Skip gate agreement, stop agreement and the in-a-row limit of one training loop."""

    gate: SkipGate          # the veto on the client optimizer's step (from parallelize)
    limit: int              # consecutive skipped steps before a TrainingError
    fp16: bool              # DeepSpeed's loss scaler owns overflow skips
    skipped: int            # steps skipped in total
    in_a_row: int           # ... and since the last applied one

    def __init__(self, gate: SkipGate, limit: int, fp16: bool, skipped: int = 0, in_a_row: int = 0):
        self.gate, self.limit, self.fp16 = gate, limit, fp16
        self.skipped, self.in_a_row = skipped, in_a_row

    def open(self) -> None:
        """At the start of a step: nothing vetoed yet."""
        self.gate.skip = False

    def agree(self, nonfinite: torch.Tensor, stop_requested: bool, dev: torch.device) -> bool:
        """The step's one host sync (a collective): veto the update on every rank when any rank saw a non-finite
        loss (`nonfinite`: () bool on `dev`); returns whether any rank asked to stop."""
        flags = D.all_reduce_max([0.0 if self.fp16 else float(nonfinite), float(stop_requested)], dev)
        self.gate.skip = flags[0] > 0
        return flags[1] > 0

    def applied(self, engine) -> bool:
        """Whether the update of the step just taken was applied (not vetoed, and no fp16 overflow)."""
        return not self.gate.skip and (not self.fp16 or engine.was_step_applied())

    def count(self, applied: bool, step: int, who: str = "", detail: Callable[[], str] = str,
              advice: str = "lower --lr") -> None:
        """Count the step; TrainingError when `limit` steps in a row were skipped. `who` prefixes the message
        ('seed 1 '), `detail()` follows the count (' (last 3.2)'; called only then: it may read the device),
        `advice` names the flags to change."""
        if applied:
            self.in_a_row = 0
            return
        self.skipped += 1
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            raise TrainingError(f"{who}stopped at step {step}: {self.in_a_row} steps in a row had a non-finite "
                                f"loss{detail()}; {advice} or use --precision fp32 (limit: --max-skipped-steps)")
