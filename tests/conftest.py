"""Test-wide setup. TRITON_INTERPRET must be set before any module with @triton.jit is imported, so it lives here.
On a machine without a GPU every Triton kernel runs under the interpreter on CPU tensors."""
import os

os.environ.setdefault("DS_ACCELERATOR", "cpu")
try:
    import torch

    _HAS_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _HAS_CUDA = False
if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
