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


def draw_seed_tensor(device) -> torch.Tensor:
    """A Philox seed for the dropout kernels: (1,) int64 in [0, 2^62) drawn ON `device` from torch's generator of that
    device. No host sync; reproducible under torch.manual_seed; inside a compiled graph it is a device random op (a
    fresh seed at every CUDA-graph replay), not a host value baked into the graph."""
    return torch.randint(0, 2**62, (1,), dtype=torch.int64, device=device)
