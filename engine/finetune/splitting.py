"""Sizes of an automatic --split, shared by classification and token classification: `train,dev[,test]` given as
fractions of the whole (each <= 1, summing to at most 1; what is left over is unused) or as counts (whole numbers,
at least one above 1; summing to at most the data; the rest unused). `split_counts` turns either into the number of
records per part; the check of the flag's value itself lives in bertforge.config.finetune.SplitFiles."""
from __future__ import annotations

from typing import Sequence

from bertforge.errors import ConfigError


def split_counts(sizes: Sequence[float], n: int, what: str = "examples") -> list[int]:
    """Records per part for `n` records. Fractions use cumulative rounding, so shares summing to 1 cover all n;
    counts are taken as they are. ConfigError when counts ask for more than n."""
    if all(s <= 1 for s in sizes):
        cuts = [min(n, round(n * sum(sizes[: j + 1]))) for j in range(len(sizes))]
        return [b - a for a, b in zip([0] + cuts, cuts)]
    counts = [int(s) for s in sizes]
    if sum(counts) > n:
        raise ConfigError(f"--split: sizes {','.join(map(str, counts))} ask for {sum(counts)} {what} but there are "
                          f"{n}; give smaller counts or fractions (e.g. 0.8,0.1,0.1)")
    return counts
