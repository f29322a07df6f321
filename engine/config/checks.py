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


# --report-to (Hugging Face's `report_to`): where each metrics record goes besides the run's metrics.jsonl
REPORT_TO = ("jsonl", "tensorboard", "wandb", "mlflow")
DEFAULT_REPORT_TO = ("jsonl", "tensorboard")


def check_report_to(value: Any) -> tuple[str, ...]:
    """--report-to as a tuple of names from REPORT_TO, 'all' or 'none' (alone); a comma-separated string or a list;
    names lower-cased, duplicates dropped in order. ConfigError naming the flag, the value and the close name."""
    import difflib

    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(x, str) for x in items):
        raise ConfigError(f"--report-to must be a comma-separated list of {', '.join(REPORT_TO)}, all or none, "
                          f"got {value!r}")
    names = tuple(dict.fromkeys(x.strip().lower() for x in items if x.strip()))
    for name in names:
        if name not in REPORT_TO + ("all", "none"):
            close = difflib.get_close_matches(name, REPORT_TO + ("all", "none"), n=1)
            raise ConfigError(f"--report-to: unknown tracker {name!r}" + (f" (did you mean {close[0]}?)" if close
                                                                         else "")
                              + f"; give a comma-separated list of {', '.join(REPORT_TO)}, or all, or none")
    if not names or (len(names) > 1 and {"all", "none"} & set(names)):
        raise ConfigError(f"--report-to {','.join(names) or value!r}: 'all' and 'none' stand alone; give one of them "
                          f"or a list of {', '.join(REPORT_TO)}")
    return names
