"""Atomic outputs: every file or folder bertforge writes appears complete under its final name, or not at all.

Each writer fills a temporary sibling (`.NAME.tmp-PID-RANDOM`, same filesystem) and renames it over the final name
when complete; on any error the temporary is removed. Final outputs get the mode a file or folder created by the user
gets (0666 / 0777 minus the umask): the temporaries of `tempfile.mkstemp`/`mkdtemp` are private (0600 / 0700) and
would keep that mode after the rename, so a shared cluster's other users could not read a model or dataset.
`durable=True` also fsyncs the data and the parent directory (checkpoints: a crash after the rename keeps them).

Also the checks of paths the user names (`check_folder`, `check_output_file`), made before any work.

This module is at the bottom of the layers: it imports only bertforge.errors."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

from bertforge.errors import ConfigError

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read by setting and restoring it, under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries (a rename inside it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_name(path: Path) -> str:
    return f".{path.name}.tmp-{os.getpid()}-"


def _name_os_error(exc: BaseException, path: Path) -> None:
    """An OSError raised while writing `path` without a file name (a write() on a full disk): raise it again naming
    `path`, so that the one-line error says which output failed. The temporary is already removed: the previous
    `path`, if any, is intact."""
    if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
        raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from exc


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb", *, durable: bool = False,
                encoding: str | None = None) -> Iterator[Any]:
    """Open a temporary sibling of `path` for writing; on a clean exit it is renamed to `path` (mode 0666 & ~umask).

    `mode` is 'wb' or 'w' (text, `encoding` defaults to UTF-8). The parent folder is created if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_name(path), dir=path.parent)
    try:
        if "b" in mode:
            fh = os.fdopen(fd, mode)
        else:
            fh = os.fdopen(fd, mode, encoding=encoding or "utf-8", newline="")
        with fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _name_os_error(exc, path)
        raise


def write_bytes(path: str | Path, data: bytes, *, durable: bool = False) -> Path:
    """Write `data` to `path` atomically. Returns `path`."""
    with atomic_file(path, "wb", durable=durable) as fh:
        fh.write(data)
    return Path(path)


def write_text(path: str | Path, text: str, *, durable: bool = False) -> Path:
    """Write UTF-8 `text` to `path` atomically. Returns `path`."""
    with atomic_file(path, "w", durable=durable) as fh:
        fh.write(text)
    return Path(path)


def write_json(path: str | Path, obj: Any, *, indent: int | None = 2, sort_keys: bool = False,
               durable: bool = False) -> Path:
    """Write `obj` as JSON (with a final newline) to `path` atomically. Returns `path`."""
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n", durable=durable)


def save_numpy(path: str | Path, array) -> Path:
    """`numpy.save` of `array` to `path` (the exact name: no `.npy` is appended) atomically. Returns `path`."""
    import numpy as np

    with atomic_file(path, "wb") as fh:
        np.save(fh, array)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, durable: bool = False) -> Iterator[Path]:
    """Yield an empty temporary sibling folder of `path` to fill; on a clean exit it replaces `path`.

    An existing `path` is moved aside first and removed only after the new folder is in place, so a reader sees
    the old complete folder or the new complete one. Folders get mode 0777 & ~umask and files 0666 & ~umask (some
    writers, e.g. safetensors, create their files private)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_name(path), dir=path.parent))
    try:
        yield tmp
        mask = current_umask()
        for root, dirs, files in os.walk(tmp):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o777 & ~mask)
            for name in files:
                os.chmod(os.path.join(root, name), 0o666 & ~mask)
        os.chmod(tmp, 0o777 & ~mask)
        if durable:
            fsync_dir(tmp)
        replace_dir(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _name_os_error(exc, path)
        raise


def replace_dir(new: str | Path, target: str | Path) -> None:
    """Rename folder `new` to `target`; an existing target is swapped out first and removed after the rename."""
    new, target = Path(new), Path(target)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_json_object(path: str | Path, what: str = "file") -> dict:
    """A JSON file that must hold an object. Raises ConfigError naming the file (and line, for bad JSON)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: {what} expected, found a directory") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {what} must be a JSON object")
    return raw


# ---- paths the user names, checked before any work ---------------------------------------------------------------
def check_folder(path: str | Path, flag: str, expected: str) -> Path:
    """`path` as a Path when it is an existing folder. ConfigError naming `flag` and the path when nothing is there
    or a file is; `expected` says what to give instead (e.g. "a Hugging Face BERT checkpoint folder")."""
    path = Path(path)
    if not path.is_dir():
        what = "a file, not a folder" if path.exists() else "no such folder"
        raise ConfigError(f"{flag} {path}: {what}; give {expected}")
    return path


def check_output_file(path: str | Path, flag: str, example: str) -> None:
    """ConfigError naming `flag` and the path when the file to write is an existing folder or is written as one (a
    trailing '/': the rename would otherwise make a file of that name); the rename over a folder would fail only at
    the end, after all the work. `example`: a file name to suggest inside it."""
    text = str(path)
    if Path(path).is_dir() or text.endswith(("/", "\\")):
        raise ConfigError(f"{flag} {text}: is a folder; give the path of a file to write, e.g. "
                          f"{Path(path) / example}")
