"""The errors a user can fix. Every one derives from `UserError`, which the command line prints as one line
(`bertforge <command>: error: <message>`) with no traceback; the message names the file (and line), the flag or field at
fault, and what to change. Anything else escaping the library is a bug and keeps its traceback.

This module is at the bottom of the layers: it imports nothing from engine."""
from __future__ import annotations


class UserError(Exception):
    """A problem in the user's input or set-up; the message is one line saying where, what and what to do."""


class ConfigError(UserError, ValueError):
    """A configuration value (flag, config field, JSON config) is invalid; the message names it."""


class DataError(UserError):
    """Bad input data or a data set that cannot be used; the message names the file (and line) and the problem.

    `path` and `line`, when given, are prefixed as `path:line: `."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        where = f"{path}:{line}: " if path is not None and line is not None else f"{path}: " if path else ""
        super().__init__(f"{where}{message}")
        self.path, self.line = path, line


class CheckpointError(UserError, ValueError):
    """A checkpoint or model directory cannot be read or does not fit the model; the message names the file."""


class TrainingError(UserError):
    """Training cannot go on (e.g. too many non-finite steps in a row); the message says why and what to do."""


_OS_ADVICE = {
    "ENOSPC": "no space left on the device: free space or write elsewhere",
    "EDQUOT": "disk quota exceeded: free space or write elsewhere",
    "EEXIST": "a file is in the way of a folder to create: remove it or give another path",
    "ENOTDIR": "a file is in the way where a folder is expected: remove it or give another path",
    "EISDIR": "a folder is in the way where a file is expected: give a file path",
    "ELOOP": "a symbolic link loop: fix or remove the link",
    "EACCES": "permission denied: change the permissions or give another path",
    "EPERM": "operation not permitted: change the permissions or give another path",
    "EROFS": "read-only file system: write elsewhere",
    "ENAMETOOLONG": "the name is too long",
}


def describe_os_error(exc: OSError) -> str | None:
    """One line for an OSError that names a file and comes from the user's file system (full disk, a file where a
    folder goes, a symlink loop, no permission, ...): 'path: cause; what to do'. None for any other OSError (a bug:
    it keeps its traceback)."""
    import errno

    name = errno.errorcode.get(exc.errno or -1)
    if exc.filename is None or name not in _OS_ADVICE:
        return None
    where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
    return f"{where}: {_OS_ADVICE[name]} ({name})"
