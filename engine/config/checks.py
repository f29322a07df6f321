"""Value checks shared by the config dataclasses; each raises ConfigError naming the field's flag."""
from __future__ import annotations

from typing import Any

from bertforge.errors import ConfigError


def flag(name: str) -> str:
    """The command-line flag of a config field: `max_seq_length` -> `--max-seq-length`."""
    return "--" + name.replace("_", "-")


def check_positive_int(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{flag(name)} must be a positive integer, got {value!r}")


def check_non_negative(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{flag(name)} must be >= 0, got {value!r}")


def check_choice(obj: Any, name: str, choices: tuple) -> None:
    value = getattr(obj, name)
    if value not in choices:
        raise ConfigError(f"{flag(name)} must be one of {', '.join(map(str, choices))}, got {value!r}")
