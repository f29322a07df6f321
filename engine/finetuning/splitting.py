"""Sizes of an automatic --split, shared by classification and token classification: `train,dev[,test]` given as
fractions of the whole (each <= 1, summing to at most 1; what is left over is unused) or as counts (whole numbers,
at least one above 1; summing to at most the data; the rest unused). `split_counts` turns either into the number of
records per part; the check of the flag's value itself lives in bertforge.config.finetune.SplitFiles."""
from __future__ import annotations

from typing import Sequence

from bertforge.errors import ConfigError

PART_NAMES = ("train", "dev", "test")


def split_counts(sizes: Sequence[float], n: int, what: str = "examples") -> list[int]:
    """Records per part for `n` records. Fractions use cumulative rounding, so shares summing to 1 cover all n;
    counts are taken as they are. ConfigError when counts ask for more than n, or when a part given a
    positive size gets no record (a tiny data set would leave e.g. test empty)."""
    if all(s <= 1 for s in sizes):
        cuts = [min(n, round(n * sum(sizes[: j + 1]))) for j in range(len(sizes))]
        counts = [b - a for a, b in zip([0] + cuts, cuts)]
    else:
        counts = [int(s) for s in sizes]
        if sum(counts) > n:
            raise ConfigError(f"--split: sizes {','.join(map(str, counts))} ask for {sum(counts)} {what} but there "
                              f"are {n}; give smaller counts or fractions (e.g. 0.8,0.1,0.1)")
    for name, size, count in zip(PART_NAMES, sizes, counts):
        if size > 0 and count == 0:
            raise ConfigError(f"--split {','.join(f'{s:g}' for s in sizes)}: {n} {what} leave the {name} part "
                              f"empty; give counts (e.g. {max(n - 2, 1)},1,1) or more data")
    return counts
