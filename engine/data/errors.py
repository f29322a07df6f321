"""The pipeline's one error type: a problem in the user's input, printed by the CLI as one line
`file:line: problem` (see engine.cli.UserError)."""
from __future__ import annotations

from engine.cli import UserError


class DataError(UserError):
    """Bad input data or a data set that cannot be used; the message names the file (and line) and the problem."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        where = f"{path}:{line}: " if path is not None and line is not None else f"{path}: " if path else ""
        super().__init__(f"{where}{message}")
        self.path, self.line = path, line
