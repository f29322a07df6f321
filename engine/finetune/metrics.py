"""Finetuning metrics, implemented here (no scikit-learn / seqeval at run time).

Classification: accuracy, macro-F1, per-class precision / recall / F1 / support, confusion matrix (rows = gold,
columns = predicted). A class with no predictions (or no gold examples) has precision (recall) 0, as scikit-learn's
`zero_division=0`.

Entities: exact-match span scoring in the strict IOB2 sense of seqeval 1.2.2 (`mode='strict', scheme=IOB2`,
seqeval/scheme.py `Tokens.entities`): an entity starts at every B-X and extends over the following I-X of the same
type; an I- tag that does not continue an entity of its type (after O, after another type, at sentence start)
starts nothing and is ignored. A predicted entity counts as correct only if the same sentence, start, end and type
is gold. Precision / recall / F1 are micro-averaged overall and reported per type. tests/finetune/test_metrics.py
checks that these numbers equal seqeval's exactly."""
from __future__ import annotations

from collections import Counter
from typing import Sequence


# ---- classification -----------------------------------------------------------------------------------------
def _prf(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def confusion_matrix(gold: Sequence[int], pred: Sequence[int], num_labels: int) -> list[list[int]]:
    """(num_labels, num_labels) counts; [g][p] = examples of gold class g predicted as p."""
    if len(gold) != len(pred):
        raise ValueError(f"gold ({len(gold)}) and predictions ({len(pred)}) differ in length")
    m = [[0] * num_labels for _ in range(num_labels)]
    for g, p in zip(gold, pred):
        m[g][p] += 1
    return m


def classification_metrics(gold: Sequence[int], pred: Sequence[int], labels: Sequence[str]) -> dict:
    """accuracy, macro_f1 (mean over all `labels`), per_class {label: precision, recall, f1, support}, confusion."""
    n = len(labels)
    m = confusion_matrix(gold, pred, n)
    total = len(gold)
    correct = sum(m[i][i] for i in range(n))
    per_class = {}
    for i, label in enumerate(labels):
        n_pred = sum(m[g][i] for g in range(n))
        n_gold = sum(m[i])
        p, r, f = _prf(m[i][i], n_pred, n_gold)
        per_class[label] = {"precision": p, "recall": r, "f1": f, "support": n_gold}
    return {
        "accuracy": correct / total if total else 0.0,
        "macro_f1": sum(c["f1"] for c in per_class.values()) / n if n else 0.0,
        "per_class": per_class,
        "confusion": {"labels": list(labels), "matrix": m},
        "n": total,
    }


# ---- entities ---------------------------------------------------------------------------------------------------
def split_tag(tag: str) -> tuple[str, str]:
    """'B-geo-loc' -> ('B', 'geo-loc'); 'O' -> ('O', '')."""
    if tag == "O":
        return "O", ""
    prefix, sep, etype = tag.partition("-")
    if not sep or prefix not in ("B", "I", "E", "S") or not etype:
        raise ValueError(f"malformed tag {tag!r} (expected O or B-/I-/E-/S-TYPE)")
    return prefix, etype


def iob2_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Strict IOB2 entities of one sentence as (start, end_exclusive, type)."""
    spans = []
    i, n = 0, len(tags)
    while i < n:
        prefix, etype = split_tag(tags[i])
        if prefix in ("E", "S"):
            raise ValueError(f"tag {tags[i]!r} is not IOB2 (convert BIOES first)")
        if prefix == "B":
            j = i + 1
            while j < n and split_tag(tags[j]) == ("I", etype):
                j += 1
            spans.append((i, j, etype))
            i = j
        else:
            i += 1  # O, or an I- that continues nothing: ignored in strict mode
    return spans


def entity_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """Entity-level precision / recall / F1 (micro) and per type, over sentences of IOB2 tags."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    gold_set, pred_set = set(), set()
    for sid, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {sid}: {len(g)} gold tags but {len(p)} predicted")
        gold_set.update((sid, *s) for s in iob2_spans(g))
        pred_set.update((sid, *s) for s in iob2_spans(p))
    hit = gold_set & pred_set
    n_gold, n_pred, n_hit = Counter(e[3] for e in gold_set), Counter(e[3] for e in pred_set), Counter(e[3] for e in hit)
    per_type = {}
    for etype in sorted(set(n_gold) | set(n_pred)):
        p, r, f = _prf(n_hit[etype], n_pred[etype], n_gold[etype])
        per_type[etype] = {"precision": p, "recall": r, "f1": f, "support": n_gold[etype]}
    p, r, f = _prf(len(hit), len(pred_set), len(gold_set))
    return {"precision": p, "recall": r, "f1": f, "per_type": per_type, "n_gold": len(gold_set),
            "n_pred": len(pred_set), "n_correct": len(hit)}


# ---- aggregation over seeds ---------------------------------------------------------------------------------
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n-1; 0 for a single value)."""
    n = len(values)
    if not n:
        return 0.0, 0.0
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, var ** 0.5


# ---- report -----------------------------------------------------------------------------------------------------
def format_report(metrics: dict) -> str:
    """Text table of `classification_metrics` (per class, confusion matrix) or `entity_metrics` (per type)."""
    lines = []
    if "accuracy" in metrics:
        lines.append(f"accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  (n={metrics['n']})")
        lines.append(f"{'class':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
        for label, row in metrics["per_class"].items():
            lines.append(f"{label:<16}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}"
                         f"{row['support']:>9}")
        labels = metrics["confusion"]["labels"]
        lines.append("confusion (rows gold, columns predicted): " + " ".join(labels))
        for label, row in zip(labels, metrics["confusion"]["matrix"]):
            lines.append(f"  {label:<14}" + "".join(f"{x:>8}" for x in row))
    else:
        lines.append(f"entity precision {metrics['precision']:.4f}  recall {metrics['recall']:.4f}  "
                     f"f1 {metrics['f1']:.4f}  (gold {metrics['n_gold']}, predicted {metrics['n_pred']})")
        lines.append(f"{'type':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
        for etype, row in metrics["per_type"].items():
            lines.append(f"{etype:<16}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}"
                         f"{row['support']:>9}")
    return "\n".join(lines)
