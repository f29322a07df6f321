"""The library's logging: one `bertforge` logger (stdlib logging), children per module (`get_logger(__name__)`).

Level: `configure(level)` (the command line's --log-level), else the BERTFORGE_LOG_LEVEL environment variable
(DEBUG, INFO, WARNING, ERROR; as transformers' TRANSFORMERS_VERBOSITY), else INFO. A notebook can route or silence
it like any library's: `logging.getLogger("bertforge").setLevel(logging.WARNING)`. `configure` adds one stderr
handler (bare messages) only when the application has set none on the `bertforge` logger or the root logger."""
from __future__ import annotations

import logging
import os
import sys

ROOT = "bertforge"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class _CurrentStderr(logging.StreamHandler):
    """A handler on whatever sys.stderr is when a record is emitted (a notebook's or a test's replacement too)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

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
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    return logger
