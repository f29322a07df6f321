"""The library's logging: one `bertforge` logger (stdlib logging), children per module (`get_logger(__name__)`).

Level: `configure(level)` (the command line's --log-level), else the BERTFORGE_LOG_LEVEL environment variable
(DEBUG, INFO, WARNING, ERROR; as transformers' TRANSFORMERS_VERBOSITY), else INFO. A notebook can route or silence
it like any library's: `logging.getLogger("bertforge").setLevel(logging.WARNING)`. `configure` adds one handler
(bare messages) only when the application has set none on the `bertforge` logger or the root logger: it writes to
stderr, except the records marked RESULT (a run's result lines: `logger.info(line, extra=RESULT)`, or the `echo`
of `result_echo`), which it writes to stdout as a command line prints its results."""
from __future__ import annotations

import logging
import os
import sys
from typing import Callable

ROOT = "bertforge"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
RESULT = {"result": True}
"""`extra=RESULT` marks a record as a result line (stdout under the default handler)."""


class _CurrentStreams(logging.StreamHandler):
    """A handler on whatever sys.stderr (sys.stdout for a RESULT record) is when a record is emitted (a notebook's or
    a test's replacement too)."""

    def __init__(self):
        self._result = False
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self._result = bool(getattr(record, "result", False))
        super().emit(record)

    @property
    def stream(self):
        return sys.stdout if self._result else sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def get_logger(name: str = ROOT) -> logging.Logger:
    """`bertforge` or a child of it (module names under bertforge.* already are). The first call configures the
    `bertforge` logger from BERTFORGE_LOG_LEVEL (INFO when unset or not a level) unless it has a level already."""
    if logging.getLogger(ROOT).level == logging.NOTSET:
        try:
            configure()
        except ValueError:
            configure(logging.INFO)  # the command line reports the bad variable (engine/cli.py)
    if name != ROOT and not name.startswith(ROOT + "."):
        name = f"{ROOT}.{name}"
    return logging.getLogger(name)


def level_from_env(default: str = "INFO") -> int:
    """BERTFORGE_LOG_LEVEL as a logging level; ValueError naming the variable for a value not in LEVELS."""
    text = os.environ.get("BERTFORGE_LOG_LEVEL", default).strip().upper()
    if text not in LEVELS:
        raise ValueError(f"BERTFORGE_LOG_LEVEL must be one of {', '.join(LEVELS)}, got {text!r}")
    return getattr(logging, text)


def configure(level: str | int | None = None) -> logging.Logger:
    """Set the `bertforge` logger's level (`level`, else BERTFORGE_LOG_LEVEL, else INFO) and give it a stderr
    handler when nothing else handles its records. Returns the logger."""
    logger = logging.getLogger(ROOT)
    if level is None:
        resolved = level_from_env()
    elif isinstance(level, str):
        resolved = getattr(logging, level.upper())
    else:
        resolved = level
    logger.setLevel(resolved)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = _CurrentStreams()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    return logger


def result_echo(name: str = ROOT) -> Callable[[str], None]:
    """An `echo(line)` for the library's result lines: INFO on logger `name`, marked RESULT. The command line passes
    `print` instead; a notebook gets the lines through logging (silenced, routed or shown like any record)."""
    logger = get_logger(name)
    return lambda message: logger.info(message, extra=RESULT)
