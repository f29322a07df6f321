"""Small helpers shared by the kernel files."""
from __future__ import annotations

import os

import torch


def is_interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1): use one config and big blocks."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def next_power_of_2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; a small stand-in under the interpreter."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def draw_seed() -> int:
    """A Philox seed drawn from torch's default CPU generator (no device sync; reproducible under manual_seed)."""
    return int(torch.randint(0, 2**31 - 1, (1,), dtype=torch.int64).item())
