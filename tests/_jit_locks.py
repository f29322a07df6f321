"""Stale build locks of torch's JIT-compiled extensions (DeepSpeed's shm_comm op among them).

torch.utils.cpp_extension guards each build with a FileBaton: `<extensions root>/<op>/lock`, created before the
compile and removed after it. A process killed mid-build leaves the file behind, and the next build of that op waits
on it (DeepSpeed's first test then stalls ~600 s). A build takes about a minute here, so a lock much older than that
has no live owner: `clear_stale_locks` removes those (tests/conftest.py, before any test runs) and keeps fresh ones,
which may belong to a build running now in another process."""
from __future__ import annotations

import time
from pathlib import Path

from bertforge.deepspeed import jit_build_locks

STALE_AFTER_S = 15 * 60
"""Age (by mtime) from which a build lock counts as left by a killed build: 15x a build's ~1 minute."""


def clear_stale_locks(root: Path, stale_after_s: float = STALE_AFTER_S, now: float | None = None) -> list[str]:
    """Remove the build locks under `root` (`<op>/lock`, or `<flavour>/<op>/lock`) older than `stale_after_s`;
    one line per lock removed, saying which and how old."""
    now = time.time() if now is None else now
    lines = []
    for lock in jit_build_locks(root):
        try:
            age = now - lock.stat().st_mtime
            if age < stale_after_s:
                continue
            lock.unlink()
        except FileNotFoundError:  # its build finished (or another session cleared it) meanwhile
            continue
        lines.append(f"removed a stale JIT build lock {lock} ({age / 60:.0f} min old, left by a killed build; a build "
                     f"takes ~1 min)")
    return lines
