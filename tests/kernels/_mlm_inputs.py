"""Inputs of the MLM-loss tests (the Triton kernel's and the CPU path's): hidden (n, h), decoder weight (V, h) and
bias (V,) in `dtype`, labels (n,) with about `ignore_frac` of them -100 and row 0 always labelled."""
import math

import torch


def mlm_inputs(n, h, V, dtype, ignore_frac=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g).to(dtype)
    w = (torch.randn(V, h, generator=g) / math.sqrt(h) * 3).to(dtype)
    b = (torch.randn(V, generator=g) * 0.5).to(dtype)
    labels = torch.randint(0, V, (n,), generator=g)
    labels[torch.rand(n, generator=g) < ignore_frac] = -100
    labels[0] = 5  # at least one labelled row
    return [hidden, w, b], labels
