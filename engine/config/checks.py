"""Value checks shared by the config dataclasses; each raises ConfigError naming the field's flag. Also the one
"did you mean" rule of every unknown name (flags, config keys, model fields, trackers): `close_names`."""
from __future__ import annotations

from typing import Any, Iterable

from bertforge.errors import ConfigError


def flag(name: str) -> str:
    """The command-line flag of a config field: `max_seq_length` -> `--max-seq-length`."""
    return "--" + name.replace("_", "-")


CLOSE_CUTOFF = 0.75
"""difflib similarity (2 x matching characters / total characters) a known name needs to be suggested for an unknown
one: typos (`--epoch`, `max_seq_len`, `wandbb`) pass, unrelated names (`--threads` -> `--betas`, ratio 0.63) do not."""


def close_names(word: str, names: Iterable[str], n: int = 3, prefixes: bool = False) -> list[str]:
    """Up to `n` of `names` genuinely close to the unknown `word`, closest first (difflib.get_close_matches at
    CLOSE_CUTOFF); [] when none is. `prefixes`: names that `word` abbreviates come first (a command line's
    `--out` for `--output-dir`, where abbreviations are refused)."""
    import difflib

    names = list(dict.fromkeys(names))
    if prefixes:
        started = [name for name in names if name.startswith(word) and name != word]
        if started:
            return started[:n]
    return difflib.get_close_matches(word, names, n=n, cutoff=CLOSE_CUTOFF)


def did_you_mean(word: str, names: Iterable[str], n: int = 3, prefixes: bool = False) -> str:
    """'did you mean A or B?' for the close_names of `word`, '' when none is close."""
    close = close_names(word, names, n, prefixes)
    return f"did you mean {' or '.join(close)}?" if close else ""


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
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(x, str) for x in items):
        raise ConfigError(f"--report-to must be a comma-separated list of {', '.join(REPORT_TO)}, all or none, "
                          f"got {value!r}")
    names = tuple(dict.fromkeys(x.strip().lower() for x in items if x.strip()))
    for name in names:
        if name not in REPORT_TO + ("all", "none"):
            hint = did_you_mean(name, REPORT_TO + ("all", "none"), n=1)
            raise ConfigError(f"--report-to: unknown tracker {name!r}" + (f" ({hint})" if hint else "")
                              + f"; give a comma-separated list of {', '.join(REPORT_TO)}, or all, or none")
    if not names or (len(names) > 1 and {"all", "none"} & set(names)):
        raise ConfigError(f"--report-to {','.join(names) or value!r}: 'all' and 'none' stand alone; give one of them "
                          f"or a list of {', '.join(REPORT_TO)}")
    return names
