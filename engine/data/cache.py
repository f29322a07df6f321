"""Where a dataset's derived files live (the per-sentence index, the NSP sample maps), and building them once.

Default location: `DATA/cache` when the data folder is writable, else `RUN/data_cache` (the run directory), so a
read-only dataset (a shared, write-protected corpus; a read-only mount) trains without writing into it. Every
derived file is built through `build_once`: one process among all that share the cache folder builds it under a
file lock, the others wait on the lock and then memory-map it."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Callable

from bertforge.errors import ConfigError, DataError, UserError
from bertforge.io import write_json

CACHE = "cache"
RUN_CACHE = "data_cache"


def writable(folder: Path) -> bool:
    """Whether files can be created in `folder` (or, when it does not exist yet, in its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return os.access(folder, os.W_OK | os.X_OK)


def default_cache_dir(data_dir: str | Path, run_dir: str | Path | None = None) -> Path:
    """DATA/cache when the data folder is writable, else RUN/data_cache. Raises DataError when neither is
    available (a read-only data folder and no run directory given)."""
    data_dir = Path(data_dir)
    if writable(data_dir / CACHE):
        return data_dir / CACHE
    if run_dir:
        return Path(run_dir) / RUN_CACHE
    raise DataError("the data folder is read-only: give a cache folder for its sample maps (--data-cache DIR)",
                    str(data_dir))


def resolve_cache_dir(data_dir: str | Path, cache_dir: str | Path | None, run_dir: str | Path | None) -> Path:
    """`cache_dir` when given (it must be writable or already hold what is needed), else the default."""
    return Path(cache_dir) if cache_dir else default_cache_dir(data_dir, run_dir)


def locate(name: str, cache_dir: Path, data_dir: str | Path) -> Path:
    """Where derived file or folder `name` is: in DATA/cache when it is already there (a dataset shipped or
    write-protected with its cache), else in `cache_dir` (where it is built when missing)."""
    shipped = Path(data_dir) / CACHE / name
    return shipped if shipped.exists() else Path(cache_dir) / name


BUILD_TIMEOUT_S = float(os.environ.get("BERTFORGE_BUILD_TIMEOUT", 3600))  # how long a rank waits for a builder
POLL_S = 0.05


def lock_path(path: Path) -> Path:
    """The lock file that guards building `path`: `.NAME.lock` beside it."""
    return path.parent / f".{path.name}.lock"


def refusal_path(path: Path) -> Path:
    """Where the builder of `path` leaves its refusal (one JSON line) for the processes that waited on it."""
    return path.parent / f".{path.name}.refused"


def _holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it ('host pid N'), or 'another process'."""
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "another process"


def _acquire(fd: int, path: Path, timeout_s: float) -> None:
    """Take the exclusive flock on `fd`, polling; DataError naming `path`, the lock and its holder on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise DataError(f"waited {timeout_s:.0f} s for {_holder(fd)} to build {path.name} (lock "
                                f"{lock_path(path).name}); if no process is building it, the file system may not "
                                f"support flock: give a node-local --data-cache, or raise BERTFORGE_BUILD_TIMEOUT",
                                str(path.parent)) from None
            time.sleep(POLL_S)


def _clear_leftovers(path: Path) -> None:
    """Remove the temporaries (`.NAME.tmp-*`, engine/io.py) of a builder of `path` that was killed mid-build: safe
    only under the lock, when no other process can be writing them."""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def build_once(path: Path, build: Callable[[], None], timeout_s: float | None = None) -> None:
    """Make sure `path` (a file or folder) exists, calling `build` (which must write it atomically, engine/io.py) in
    exactly one process among all those that share the cache folder; the others wait and then use it.

    One mechanism for every derived file: an exclusive `flock` on `.NAME.lock` beside `path`. The first process
    to take it builds; every other one waits on the lock (up to `timeout_s`, default BERTFORGE_BUILD_TIMEOUT, then
    a DataError naming the file, the lock and the holder's host and pid), sees `path` and returns. No collective is
    involved, so no rank waits in a barrier for a rank that failed. The kernel drops the lock of a killed process,
    and the next process clears the killed builder's temporaries and builds. A refusal of the builder (a UserError)
    is written to `.NAME.refused` and raised again, with the same one line, in every process that waited on it;
    a process arriving later builds again (and is refused the same way). All ranks of a node share the cache
    folder, so one rank per node builds (one in all when the folder is shared by the nodes and its file system
    supports flock: local disks, NFSv4, Lustre mounted with `flock`)."""
    path = Path(path)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        _acquire(fd, path, BUILD_TIMEOUT_S if timeout_s is None else timeout_s)
        if path.exists():
            return
        _raise_refusal(refusal_path(path), since=started)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()} pid {os.getpid()}".encode(), 0)
        _clear_leftovers(path)
        try:
            build()
        except UserError as exc:
            write_json(refusal_path(path), {"type": type(exc).__name__, "message": str(exc)})
            raise
        refusal_path(path).unlink(missing_ok=True)
    finally:
        os.close(fd)  # releases the flock


def _raise_refusal(refused: Path, since: float) -> None:
    """Raise again the refusal a builder left while this process waited on it (written after `since`)."""
    try:
        if refused.stat().st_mtime < since:
            return
        record = json.loads(refused.read_text())
    except (OSError, ValueError):
        return
    cls = {c.__name__: c for c in (DataError, ConfigError)}.get(record.get("type"), DataError)
    raise cls(str(record.get("message", f"{refused}: the process that built this file refused it")))
