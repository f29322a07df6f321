"""Our entity F1 must equal seqeval's (strict IOB2) exactly; classification metrics against hand counts."""
import random

import pytest

from bertforge.finetuning.metrics import classification_metrics, entity_metrics, iob2_spans, mean_std

seqeval_metrics = pytest.importorskip("seqeval.metrics")
from seqeval.scheme import IOB2  # noqa: E402


def seqeval_scores(gold, pred):
    kw = dict(mode="strict", scheme=IOB2)
    report = seqeval_metrics.classification_report(gold, pred, output_dict=True, zero_division=0, **kw)
    per_type = {k: v for k, v in report.items() if not k.endswith(" avg")}
    return {"precision": seqeval_metrics.precision_score(gold, pred, zero_division=0, **kw),
            "recall": seqeval_metrics.recall_score(gold, pred, zero_division=0, **kw),
            "f1": seqeval_metrics.f1_score(gold, pred, zero_division=0, **kw), "per_type": per_type}


def assert_agrees(gold, pred):
    ours, ref = entity_metrics(gold, pred), seqeval_scores(gold, pred)
    for key in ("precision", "recall", "f1"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key
    assert set(ours["per_type"]) == set(ref["per_type"])
    for etype, row in ref["per_type"].items():
        for key in ("precision", "recall", "f1"):
            assert ours["per_type"][etype][key] == pytest.approx(row[REPORT_KEYS[key]], abs=1e-12), (etype, key)
        assert ours["per_type"][etype]["support"] == row["support"]


REPORT_KEYS = {"precision": "precision", "recall": "recall", "f1": "f1-score"}

CASES = {
    "entity at sentence end": ([["O", "B-PER", "I-PER"]], [["O", "B-PER", "I-PER"]]),
    "truncated at sentence end": ([["O", "B-PER", "I-PER"]], [["O", "B-PER", "O"]]),
    "I without B (pred)": ([["B-LOC", "I-LOC", "O"]], [["I-LOC", "I-LOC", "O"]]),
    "I without B (gold)": ([["O", "I-ORG", "I-ORG"]], [["O", "B-ORG", "I-ORG"]]),
    "I after other type": ([["B-PER", "I-LOC", "O"]], [["B-PER", "B-LOC", "O"]]),
    "adjacent same type": ([["B-PER", "B-PER", "I-PER"]], [["B-PER", "I-PER", "I-PER"]]),
    "adjacent same type both": ([["B-PER", "B-PER", "O", "B-PER"]], [["B-PER", "B-PER", "O", "B-PER"]]),
    "type mismatch": ([["B-PER", "I-PER"]], [["B-ORG", "I-ORG"]]),
    "hyphenated types": ([["B-geo-loc", "I-geo-loc", "O", "B-other"]], [["B-geo-loc", "I-geo-loc", "B-other", "O"]]),
    "no predictions": ([["B-PER", "O"]], [["O", "O"]]),
    "single-token sentences": ([["B-X"], ["O"], ["I-X"]], [["B-X"], ["B-X"], ["I-X"]]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_entity_f1_matches_seqeval_on_edge_cases(name):
    gold, pred = CASES[name]
    assert_agrees(gold, pred)


def test_entity_spans_strict():
    assert iob2_spans(["B-A", "I-A", "I-B", "B-A", "O", "I-A"]) == [(0, 2, "A"), (3, 4, "A")]
    assert iob2_spans(["O", "B-PER", "I-PER"]) == [(1, 3, "PER")]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # seqeval's weighted average over an empty report
def test_entity_f1_matches_seqeval_on_random_sequences():
    rng = random.Random(0)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-geo-loc", "I-geo-loc"]
    for _ in range(200):
        n = rng.randint(1, 6)
        gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(n)]
        pred = [[t if rng.random() < 0.6 else rng.choice(tags) for t in s] for s in gold]
        assert_agrees(gold, pred)


def test_classification_metrics_by_hand():
    gold = [0, 0, 1, 1, 2, 2, 2]
    pred = [0, 1, 1, 1, 2, 0, 0]
    m = classification_metrics(gold, pred, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert m["confusion"]["matrix"] == [[1, 1, 0], [0, 2, 0], [2, 0, 1]]
    a, b, c = (m["per_class"][k] for k in "abc")
    assert (a["precision"], a["recall"]) == (pytest.approx(1 / 3), pytest.approx(1 / 2))
    assert (b["precision"], b["recall"]) == (pytest.approx(2 / 3), 1.0)
    assert (c["precision"], c["recall"], c["support"]) == (1.0, pytest.approx(1 / 3), 3)
    assert m["macro_f1"] == pytest.approx((a["f1"] + b["f1"] + c["f1"]) / 3)
    empty = classification_metrics([0, 0], [0, 0], ["a", "b"])  # class never predicted nor gold: 0, not NaN
    assert empty["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_classification_metrics_match_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = random.Random(1)
    gold = [rng.randrange(4) for _ in range(300)]
    pred = [g if rng.random() < 0.5 else rng.randrange(4) for g in gold]
    m = classification_metrics(gold, pred, list("abcd"))
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(gold, pred))
    assert m["macro_f1"] == pytest.approx(sk.f1_score(gold, pred, average="macro"))
    assert m["confusion"]["matrix"] == sk.confusion_matrix(gold, pred).tolist()


def test_mean_std():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([5.0]) == (5.0, 0.0)


def test_collapse_hint_leaves_out_class_weights_already_on():
    from bertforge.finetuning.metrics import collapse_warning

    found = {"label": "pos", "share": 1.0, "gold_share": 0.6}
    assert "Try --class-weight balanced, another --lr" in collapse_warning(found, "dev", "pos")
    line = collapse_warning(found, "dev", "pos", class_weights=True)
    assert "--class-weight" not in line and "Try another --lr, more --epochs or more data" in line
