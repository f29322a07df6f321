"""Accumulation-invariant token-level losses (bertforge.train.token_loss + the heads' num_items_in_batch).
Kinds and variants covered: token classification (NER / per-word tags) and masked LM (domain MLM, pretraining MLM:
BertForMaskedLM and BertForPreTraining's MLM part), each on 8 sentences of very unequal lengths (2 to 40 tokens,
padded per micro batch), fp32, dropout 0: the global batch split 1 x 8, 4 x 2 and 2 ranks x 2 x 2 gives the same
reported loss and the same weights after one SGD step; the per-micro-batch mean (the old behaviour) differs, so the
test can fail; sequence classification keeps its mean (no num_items argument). DeepSpeed's averaging (loss / accum
before backward, gradients averaged over ranks) is reproduced in plain torch; the ranks are simulated in one
process (the count's all-reduce is the only collective; step_num_items is checked on one process)."""
import copy

import pytest
import torch

from bertforge.config.model import tiny
from bertforge.heads import BertForMaskedLM, BertForPreTraining, BertForTokenClassification
from bertforge.train.token_loss import backward_scale, step_num_items

LENGTHS = [3, 40, 5, 2, 30, 4, 25, 6]
SPLITS = {"1x8": (1, 1, 8), "4x2": (1, 4, 2), "2 ranks x 2x2": (2, 2, 2)}  # (ranks, accum, micro)


def _config():
    return tiny(hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=100, num_hidden_layers=2,
                max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _sentences(kind):
    g = torch.Generator().manual_seed(0)
    out = []
    for n in LENGTHS:
        ids = torch.randint(5, 100, (n,), generator=g)
        if kind == "ner":
            labels = torch.randint(0, 5, (n,), generator=g)
        else:  # mlm: about 30% of tokens masked, at least one
            labels = torch.where(torch.rand(n, generator=g) < 0.3, ids, torch.full_like(ids, -100))
            labels[0] = ids[0]
        out.append((ids, labels))
    return out


def _batch(sentences):
    width = max(len(ids) for ids, _ in sentences)
    ids = torch.zeros(len(sentences), width, dtype=torch.long)
    labels = torch.full((len(sentences), width), -100)
    mask = torch.zeros(len(sentences), width, dtype=torch.long)
    for i, (x, y) in enumerate(sentences):
        ids[i, : len(x)], labels[i, : len(y)], mask[i, : len(x)] = x, y, 1
    return ids, mask, labels


def _loss(model, kind, batch, n):
    ids, mask, labels = batch
    if kind == "ner":
        return model(ids, attention_mask=mask, labels=labels, num_items_in_batch=n).loss
    if kind == "pretrain":
        return model(ids, attention_mask=mask, mlm_labels=labels, num_items_in_batch=n).mlm_loss
    return model(ids, attention_mask=mask, mlm_labels=labels, num_items_in_batch=n).loss


def _one_step(model, kind, split, normalise):
    """One optimizer step as DeepSpeed takes it: per rank, each micro loss / accum is backpropagated; the ranks'
    gradients are averaged; SGD lr 0.5. Returns (reported loss, weights)."""
    ranks, accum, micro = split
    sentences = _sentences(kind)
    parts = [[sentences[(r * accum + k) * micro:(r * accum + k + 1) * micro] for k in range(accum)]
             for r in range(ranks)]
    batches = [[_batch(p) for p in rank] for rank in parts]
    n = step_num_items([b[2] for rank in batches for b in rank]) if normalise else None
    scale = backward_scale(accum, ranks) if normalise else 1
    grads, reported = None, 0.0
    for rank in batches:
        replica = copy.deepcopy(model)
        for batch in rank:
            loss = _loss(replica, kind, batch, n) * scale  # what the trainer hands to engine.backward
            (loss / accum).backward()  # DeepSpeed's scale_wrt_gas
            reported += float(loss)
        g = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in replica.parameters()]
        grads = g if grads is None else [a + b for a, b in zip(grads, g)]
    with torch.no_grad():
        new = copy.deepcopy(model)
        for p, g in zip(new.parameters(), grads):
            p -= 0.5 * g / ranks  # gradients averaged over ranks
    return reported / (accum * ranks), torch.cat([p.detach().flatten() for p in new.parameters()])


MODELS = {"ner": lambda c: BertForTokenClassification(c, 5), "mlm": BertForMaskedLM, "pretrain": BertForPreTraining}


@pytest.mark.parametrize("kind", list(MODELS))
def test_same_loss_and_weights_however_the_batch_is_cut(kind):
    torch.manual_seed(0)
    model = MODELS[kind](_config()).float()
    results = {name: _one_step(model, kind, split, True) for name, split in SPLITS.items()}
    ref_loss, ref_w = results["1x8"]
    for name, (loss, w) in results.items():
        assert loss == pytest.approx(ref_loss, rel=1e-5, abs=1e-6), name
        assert torch.allclose(w, ref_w, rtol=1e-5, atol=1e-6), (name, float((w - ref_w).abs().max()))
    # the whole batch's mean, computed directly
    whole = _loss(model, kind, _batch(_sentences(kind)), None)
    assert ref_loss == pytest.approx(float(whole), rel=1e-5)
    old = {name: _one_step(model, kind, split, False) for name, split in SPLITS.items()}
    assert abs(old["4x2"][0] - old["1x8"][0]) > 1e-4  # per-micro-batch means depend on the cut


def test_num_items_counts_labelled_tokens_only():
    assert step_num_items([torch.tensor([[-100, 3, 4], [1, -100, -100]]), torch.tensor([[-100]])]) == 3
    assert step_num_items([torch.tensor([[-100]])]) == 1  # no labelled token: no division by zero
    assert backward_scale(4, 2) == 8


def _classify_step(model, task, split, normalise):
    """_one_step for class-weighted sequence classification (ClassifyTask.loss, 3 classes, weights 'balanced' over
    the labels 0,0,0,0,0,1,1,2): the normaliser is the step's summed label weights (step_num_items(weights=w))."""
    from bertforge.train.token_loss import step_num_items as count

    ranks, accum, micro = split
    sentences = _sentences("ner")
    labels = torch.tensor([0, 1, 0, 0, 2, 0, 1, 0])  # balanced weights 8/15, 4/3, 8/3
    batches = []
    for r in range(ranks):
        rank = []
        for k in range(accum):
            lo = (r * accum + k) * micro
            ids, mask, _ = _batch(sentences[lo:lo + micro])
            rank.append({"input_ids": ids, "attention_mask": mask, "labels": labels[lo:lo + micro]})
        batches.append(rank)
    n = count([b["labels"] for rank in batches for b in rank], weights=task.class_weights) if normalise else None
    scale = backward_scale(accum, ranks) if normalise else 1
    grads, reported = None, 0.0
    for rank in batches:
        replica = copy.deepcopy(model)
        for batch in rank:
            loss = task.loss(replica, batch, n) * scale
            (loss / accum).backward()
            reported += float(loss.detach())
        g = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in replica.parameters()]
        grads = g if grads is None else [a + b for a, b in zip(grads, g)]
    with torch.no_grad():
        new = copy.deepcopy(model)
        for p, g in zip(new.parameters(), grads):
            p -= 0.5 * g / ranks
    return reported / (accum * ranks), torch.cat([p.detach().flatten() for p in new.parameters()])


def test_class_weighted_classification_is_one_weighted_mean_over_the_step():
    """--class-weight: sum_i w[y_i] nll_i / sum_i w[y_i] over the whole step however it is cut (1 x 8, 4 x 2,
    2 ranks x 2 x 2), equal to torch's cross_entropy(weight=w) over the 8 examples at once; the per-micro-batch
    weighted mean (the old behaviour) depends on the cut. Unweighted, the per-micro-batch mean is kept (no
    normaliser: micro batches are of equal size)."""
    from bertforge.finetuning.tasks import ClassifyTask, balanced_weights
    from bertforge.heads import BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(_config(), 3).float()
    task = ClassifyTask(["a", "b", "c"], 64, class_weights=balanced_weights([0, 1, 0, 0, 2, 0, 1, 0], 3))
    results = {name: _classify_step(model, task, split, True) for name, split in SPLITS.items()}
    ref_loss, ref_w = results["1x8"]
    for name, (loss, w) in results.items():
        assert loss == pytest.approx(ref_loss, rel=1e-6), name  # measured: equal; weights within 7.5e-9
        assert torch.allclose(w, ref_w, rtol=1e-5, atol=1e-6), (name, float((w - ref_w).abs().max()))
    ids, mask, _ = _batch(_sentences("ner"))
    labels = torch.tensor([0, 1, 0, 0, 2, 0, 1, 0])
    whole = task.loss(model, {"input_ids": ids, "attention_mask": mask, "labels": labels})
    assert ref_loss == pytest.approx(float(whole), rel=1e-6)
    old = {name: _classify_step(model, task, split, False) for name, split in SPLITS.items()}
    assert abs(old["4x2"][0] - old["1x8"][0]) > 1e-4
    plain, batch = ClassifyTask(["a", "b", "c"], 64), {"input_ids": ids, "attention_mask": mask, "labels": labels}
    assert plain.loss(model, batch, 99.0).item() == plain.loss(model, batch).item()  # unweighted: its mean, as before


def test_weighted_count_sums_the_label_weights():
    w = [0.5, 2.0, 4.0]
    assert step_num_items([torch.tensor([0, 1, 1]), torch.tensor([2, -100])], weights=w) == 8.5
    assert isinstance(step_num_items([torch.tensor([0])], weights=w), float)
