"""`ParallelConfig`: the one section of the training runtime's own settings, shared by pretraining and finetuning —
precision, distribution, kernels, compile, activation checkpointing, the collective timeout and the non-finite-step
limit. Each field is one flag (`--precision`, `--zero-stage`, `--max-skipped-steps`, ...) of both commands. Bottom
layer: imports only bertforge.errors and bertforge.config."""
from __future__ import annotations

from dataclasses import dataclass

from bertforge.config.checks import check_choice, check_positive_int
from bertforge.config.model import KERNEL_BACKENDS
from bertforge.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class ParallelConfig:
    precision: str = "fp32"
    """'fp32', 'bf16' or 'fp16' (dynamic loss scaling; GPU only)."""
    zero_stage: int = 0
    """DeepSpeed ZeRO stage 0-3."""
    deepspeed_config: str = ""
    """A user's DeepSpeed JSON; it wins where it speaks, unless it contradicts an explicit flag (error)."""
    kernels: str = "none"
    """'none' (pure torch) or 'triton' (kernels/ package: fused attention, epilogues, sparse MLM loss; a GPU, or the
    interpreter with TRITON_INTERPRET=1)."""
    compile: bool = False
    """torch.compile the model's forward (dynamic shapes; the Triton kernels are custom ops it traces through).
    ZeRO 0-2 only."""
    activation_checkpointing: bool = False
    """Recompute each encoder layer's activations in the backward instead of storing them (less memory, ~1/3 more
    compute); applied by engine/parallelize.py."""
    dist_timeout_s: int = 600
    """Collective timeout in seconds: a rank that dies or hangs takes the job down after this long."""
    max_skipped_steps: int = 20
    """Stop with an error after this many consecutive steps with a non-finite loss."""

    def __post_init__(self) -> None:
        check_choice(self, "precision", PRECISIONS)
        check_choice(self, "kernels", KERNEL_BACKENDS)
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"--zero-stage must be 0, 1, 2 or 3, got {self.zero_stage!r}")
        check_positive_int(self, "dist_timeout_s", "max_skipped_steps")
        if self.compile and self.zero_stage == 3:
            raise ConfigError("--compile is not supported with --zero-stage 3 (ZeRO-3 gathers parameters in "
                              "module hooks that torch.compile does not trace); use ZeRO 0-2")
