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
one: typos (`--epoch`, `max_seq_len`, `wandbb`) pass, unrelated names (`--threads` -> `--betas`, ratio 0.63) do not.
Short names get a second rule (`one_edit`), since one typo in 3 letters is a ratio of 0.67 at best."""
MIN_EDIT_LENGTH = 3
"""Shortest word (and name) the one-edit rule applies to: 'x' -> 'ner' or 'ab' -> 'mlm' are no suggestion."""


def one_edit(a: str, b: str) -> bool:
    """Whether `b` is `a` with one typo: a character swapped with its neighbour (`nre` -> `ner`), replaced, added or
    dropped (the optimal-string-alignment distance is 1), both at least MIN_EDIT_LENGTH long; or only the case
    differs (`Ner` -> `ner`)."""
    if a != b and a.lower() == b.lower():
        return True
    a, b = a.lower(), b.lower()
    if a == b or min(len(a), len(b)) < MIN_EDIT_LENGTH or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
                                  and a[diff[1]] == b[diff[0]])
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def close_names(word: str, names: Iterable[str], n: int = 3, prefixes: bool = False) -> list[str]:
    """Up to `n` of `names` genuinely close to the unknown `word`, closest first: those one typo away (`one_edit`),
    then difflib.get_close_matches at CLOSE_CUTOFF; [] when none is. `prefixes`: names that `word` abbreviates come
    first (a command line's `--out` for `--output-dir`, where abbreviations are refused)."""
    import difflib

    names = list(dict.fromkeys(names))
    if prefixes:
        started = [name for name in names if name.startswith(word) and name != word]
        if started:
            return started[:n]
    same = [name for name in names if name != word and name.lower() == word.lower()]
    if same:  # only the case differs (`IOB2`): that name alone, not its one-typo neighbours (`iob1`)
        return same[:n]
    typos = [name for name in names if one_edit(word, name)]
    return list(dict.fromkeys(typos + difflib.get_close_matches(word, names, n=n, cutoff=CLOSE_CUTOFF)))[:n]


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


def invalid_choice(name: str, value: Any, choices: Iterable) -> str:
    """The one line of a value outside `choices`, with the close ones (close_names):
    `--class-weight: invalid choice 'balansed' (did you mean 'balanced'?); choose from auto, none, balanced`.
    `name`: the flag or field as the user wrote it ("": the line without it, for argparse to prefix)."""
    choices = [str(c) for c in choices]
    close = close_names(value, choices, n=2) if isinstance(value, str) else []
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return f"{name + ': ' if name else ''}invalid choice {value!r}{hint}; choose from {', '.join(choices)}"


def check_choice(obj: Any, name: str, choices: tuple) -> None:
    value = getattr(obj, name)
    if value not in choices:
        raise ConfigError(invalid_choice(flag(name), value, choices))


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
