"""Finetuning metrics, implemented here (no scikit-learn / seqeval at run time).

Classification: accuracy, macro-F1, per-class precision / recall / F1 / support, confusion matrix (rows = gold,
columns = predicted). A class with no predictions (or no gold examples) has precision (recall) 0, as scikit-learn's
`zero_division=0`. The same numbers come from counts of (gold, predicted) label pairs (`pair_metrics`), which a
streamed or sharded evaluation adds up; a gold label the model does not know gets its own row and counts as a
miss. Plain per-word tags (part of speech, ...) are scored the same way per word (`token_metrics`). `collapse`
flags a model that predicts one class for >= 95% of a set (collapsed to the majority class).

Entities: exact-match span scoring in the strict IOB2 sense of seqeval 1.2.2 (`mode='strict', scheme=IOB2`,
seqeval/scheme.py `Tokens.entities`): an entity starts at every B-X and extends over the following I-X of the same
type; an I- tag that does not continue an entity of its type (after O, after another type, at sentence start)
starts nothing and is ignored. A predicted entity counts as correct only if the same sentence, start, end and type
is gold. Precision / recall / F1 are micro-averaged overall and reported per type. tests/finetuning/test_metrics.py
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
    """accuracy, macro_f1 (see macro_f1: over the labels present in gold or predictions), per_class {label: precision, recall, f1, support}, confusion."""
    return metrics_from_confusion(confusion_matrix(gold, pred, len(labels)), labels)


def pair_metrics(pairs: Counter, labels: Sequence[str]) -> dict:
    """classification_metrics from {(gold label, predicted label): count}; gold labels outside `labels` (unknown to
    the model) are appended in sorted order and count as misses."""
    extra = sorted({g for g, _ in pairs if g not in labels})
    names = list(labels) + extra
    index = {l: i for i, l in enumerate(names)}
    m = [[0] * len(names) for _ in names]
    for (g, p), count in pairs.items():
        m[index[g]][index[p]] += count
    return metrics_from_confusion(m, names)


def token_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], labels: Sequence[str]) -> dict:
    """Per-word tag scores (plain tags): accuracy over words, per-tag precision / recall / F1, macro-F1, confusion."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    return pair_metrics(Counter(zip((t for s in gold for t in s), (t for s in pred for t in s))), labels)


def collapse(metrics: dict, threshold: float = 0.95) -> dict | None:
    """{'label', 'share', 'gold_share'} when one class takes >= `threshold` of the predictions of a set (the
    model collapsed to one class), else None. `metrics`: classification_metrics' output."""
    m, labels = metrics["confusion"]["matrix"], metrics["confusion"]["labels"]
    total = sum(map(sum, m))
    if not total:
        return None
    predicted = [sum(row[j] for row in m) for j in range(len(labels))]
    j = max(range(len(labels)), key=predicted.__getitem__)
    if predicted[j] / total < threshold:
        return None
    return {"label": labels[j], "share": predicted[j] / total, "gold_share": sum(m[j]) / total}


def collapse_warning(found: dict, split: str, majority: str | None, class_weights: bool = False) -> str:
    """The warning line for collapse()'s finding on `split`; `majority`: the training set's most frequent label;
    class_weights: the run already weights the classes (the hint then leaves --class-weight out)."""
    what = "the majority class" if found["label"] == majority else "one class"
    hint = "another --lr" if class_weights else "--class-weight balanced, another --lr"
    return (f"warning: the model predicts {found['label']!r} for {found['share']:.1%} of the {split} set (gold share "
            f"{found['gold_share']:.1%}): collapsed to {what}. Try {hint}, more --epochs or more data")


def macro_f1(per_class: dict, n_pred: Sequence[int]) -> float:
    """Mean F1 over the classes that occur in the gold labels or the predictions (scikit-learn's f1_score with
    average='macro', labels=None: a class absent from both is not averaged in); 0.0 when there is none.
    `n_pred`: predictions per class, in per_class's order."""
    present = [c["f1"] for c, p in zip(per_class.values(), n_pred) if c["support"] or p]
    return sum(present) / len(present) if present else 0.0


def metrics_from_confusion(m: list[list[int]], labels: Sequence[str]) -> dict:
    """classification_metrics from a (C, C) confusion matrix [gold][predicted] over `labels`."""
    n = len(labels)
    total = sum(map(sum, m))
    correct = sum(m[i][i] for i in range(n))
    per_class = {}
    for i, label in enumerate(labels):
        n_pred = sum(m[g][i] for g in range(n))
        n_gold = sum(m[i])
        p, r, f = _prf(m[i][i], n_pred, n_gold)
        per_class[label] = {"precision": p, "recall": r, "f1": f, "support": n_gold}
    return {
        "accuracy": correct / total if total else 0.0,
        "macro_f1": macro_f1(per_class, [sum(m[g][i] for g in range(n)) for i in range(n)]),
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


def entity_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> Counter:
    """{(type, 'gold' | 'pred' | 'hit'): count} of strict IOB2 entities; counts of several batches of sentences add
    up (Counter +) to those of all of them."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    out: Counter = Counter()
    for sid, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {sid}: {len(g)} gold tags but {len(p)} predicted")
        gs, ps = set(iob2_spans(g)), set(iob2_spans(p))
        out.update((e[2], "gold") for e in gs)
        out.update((e[2], "pred") for e in ps)
        out.update((e[2], "hit") for e in gs & ps)
    return out


def entity_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """Entity-level precision / recall / F1 (micro) and per type, over sentences of IOB2 tags."""
    return entity_metrics_from_counts(entity_counts(gold, pred))


def entity_metrics_from_counts(counts: Counter) -> dict:
    """entity_metrics from entity_counts' output."""
    n_gold, n_pred, n_hit = (Counter({t: c for (t, k), c in counts.items() if k == kind})
                             for kind in ("gold", "pred", "hit"))
    per_type = {}
    for etype in sorted(set(n_gold) | set(n_pred)):
        p, r, f = _prf(n_hit[etype], n_pred[etype], n_gold[etype])
        per_type[etype] = {"precision": p, "recall": r, "f1": f, "support": n_gold[etype]}
    hit, n_p, n_g = sum(n_hit.values()), sum(n_pred.values()), sum(n_gold.values())
    p, r, f = _prf(hit, n_p, n_g)
    return {"precision": p, "recall": r, "f1": f, "per_type": per_type, "n_gold": n_g, "n_pred": n_p,
            "n_correct": hit}


# ---- aggregation over seeds ---------------------------------------------------------------------------------
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n-1; 0 for a single value)."""
    n = len(values)
    if not n:
        return 0.0, 0.0
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, var ** 0.5


MAX_MATRIX_LABELS = 12  # wider confusion matrices are summarised as their most-confused pairs on the terminal


def most_confused(labels: Sequence[str], matrix: Sequence[Sequence[int]], top: int = 10) -> list[tuple[str, str, int]]:
    """The `top` off-diagonal cells (gold, predicted, count) of a confusion matrix, largest first (ties: label
    order); zero cells are left out."""
    cells = [(-matrix[g][p], g, p) for g in range(len(labels)) for p in range(len(labels)) if g != p and matrix[g][p]]
    return [(labels[g], labels[p], -c) for c, g, p in sorted(cells)[:top]]


def _confusion_lines(labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> list[str]:
    if len(labels) > MAX_MATRIX_LABELS:
        pairs = most_confused(labels, matrix)
        return [f"confusion: {len(labels)} labels, the full matrix is in the JSON report (finetune: summary.json; "
                f"evaluate: --out); most confused (gold -> predicted: count): "
                + (", ".join(f"{g} -> {p}: {c}" for g, p, c in pairs) or "none")]
    lines = ["confusion (rows gold, columns predicted): " + " ".join(labels)]
    for label, row in zip(labels, matrix):
        lines.append(f"  {label:<14}" + "".join(f"{x:>8}" for x in row))
    return lines


# ---- report -----------------------------------------------------------------------------------------------------
def format_report(metrics: dict) -> str:
    """Text table of `classification_metrics` (per class, confusion matrix) or `entity_metrics` (per type)."""
    lines = []
    if "accuracy" in metrics:
        lines.append(f"accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  (n={metrics['n']})")
        lines.append(f"{'class / tag':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
        for label, row in metrics["per_class"].items():
            lines.append(f"{label:<16}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}"
                         f"{row['support']:>9}")
        lines += _confusion_lines(metrics["confusion"]["labels"], metrics["confusion"]["matrix"])
    else:
        lines.append(f"entity precision {metrics['precision']:.4f}  recall {metrics['recall']:.4f}  "
                     f"f1 {metrics['f1']:.4f}  (gold {metrics['n_gold']}, predicted {metrics['n_pred']})")
        lines.append(f"{'type':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
        for etype, row in metrics["per_type"].items():
            lines.append(f"{etype:<16}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}"
                         f"{row['support']:>9}")
    return "\n".join(lines)
