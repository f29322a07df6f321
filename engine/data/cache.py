"""Where a dataset's derived files live (the per-sentence index, the NSP sample maps), and building them once.

Default location: `DATA/cache` when the data folder is writable, else `RUN/data_cache` (the run directory), so a
read-only dataset (a shared, write-protected corpus; a read-only mount) trains without writing into it. All ranks
of a node share the folder: global rank 0 builds what is missing, then the first rank of every other node builds
what it still cannot see (a node-local cache); every rank waits on a barrier and then memory-maps the files."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from bertforge.errors import DataError

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


def _ranks() -> tuple[int, int, bool]:
    """(global rank, local rank, distributed) in a joined process group; (0, 0, False) otherwise."""
    from bertforge import distributed as D

    if D.is_initialized():
        return D.rank(), D.local_rank(), True
    return 0, 0, False


def build_once(path: Path, build: Callable[[], None]) -> None:
    """Make sure `path` exists, calling `build` (which must write it atomically) on as few ranks as possible:
    global rank 0 first, then the first rank of a node that still does not see it; all ranks wait for both."""
    rank, local_rank, distributed = _ranks()
    if rank == 0 and not path.exists():
        build()
    if not distributed:
        return
    from bertforge import distributed as D

    D.barrier()
    if local_rank == 0 and rank != 0 and not path.exists():
        build()
    D.barrier()
