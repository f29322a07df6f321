"""Where a run ran: `environment()` -> the `environment` block of RUN/config.json and of finetune summary.json.

Keys: bertforge (version; git commit and whether the work tree had changes, when the package runs from a git
checkout), python, platform, torch, cuda (torch's CUDA build), cuda_driver (the driver's CUDA API version, e.g.
"12.4"), triton, deepspeed, transformers (None when not installed; versions are read from the installed package
metadata, nothing is imported for them: only bertforge.deepspeed imports deepspeed), devices (accelerator names,
e.g. ["NVIDIA H100 80GB HBM3"]; [] on CPU), world_size, hosts (the distinct host names of all ranks, in rank order).

With torch.distributed initialized and more than one rank, the hosts are gathered with a collective: every rank
must call `environment()` (rank 0 then writes it)."""
from __future__ import annotations

import importlib.metadata
import platform
import socket
import subprocess
import sys
from pathlib import Path


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit(where: str | Path | None = None) -> dict | None:
    """{'commit': sha, 'dirty': bool} of the git checkout holding `where` (default: this package's source), or None
    (an installed wheel, no git, or a timeout of 5 s)."""
    where = Path(where or Path(__file__).resolve().parent)
    try:
        sha = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        if sha.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {"commit": sha.stdout.strip(), "dirty": bool(status.stdout.strip())}


def _cuda() -> dict:
    import torch

    out = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_driver": None, "devices": []}
    if torch.cuda.is_available():
        out["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        try:
            v = torch._C._cuda_getDriverVersion()  # e.g. 12040: the CUDA API version the driver supports
            out["cuda_driver"] = f"{v // 1000}.{v % 1000 // 10}"
        except (AttributeError, RuntimeError):
            pass
    return out


def _hosts() -> tuple[int, list[str]]:
    import torch.distributed as dist

    host = socket.gethostname()
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return 1, [host]
    names: list = [None] * dist.get_world_size()
    dist.all_gather_object(names, host)  # a collective: every rank is here
    return len(names), list(dict.fromkeys(names))


def environment() -> dict:
    """The block described in the module docstring (JSON-serialisable)."""
    from bertforge import __version__

    world, hosts = _hosts()
    return {"bertforge": {"version": __version__, "git": git_commit()},
            "python": platform.python_version(), "platform": platform.platform(), "executable": sys.executable,
            **_cuda(), "triton": _version("triton"), "deepspeed": _version("deepspeed"),
            "transformers": _version("transformers"), "world_size": world, "hosts": hosts}
