"""The last encoder layer on the masked rows and [CLS] only (ModelConfig.last_layer_subset, MosaicBERT's subset_idx)
gives the full layer's loss and gradients, fp32, padded and unpadded, at dropout 0 and at dropout 0.1 with
per-sample dropout ids (the epilogues' masks follow each token), for both pretraining heads and both backends."""
import pytest
import torch

from bertforge.config import tiny
from bertforge.heads import BertForMaskedLM, BertForPreTraining

CFG = tiny(vocab_size=211, hidden_size=48, num_attention_heads=3, intermediate_size=96, max_position_embeddings=64)
TOL = 1e-6  # fp32: the subset rows are computed by the same ops on the same values; only GEMM blocking may differ


def _batch(seed=0, batch=3, seq=23):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([seq, 2, 13][:batch])
    mask = torch.arange(seq)[None, :] < lengths[:, None]
    ids = torch.randint(5, CFG.vocab_size, (batch, seq), generator=g) * mask
    types = (torch.arange(seq)[None, :] >= lengths[:, None] // 2).long() * mask
    labels = torch.where((torch.rand(batch, seq, generator=g) < 0.2) & mask, ids, -100)
    labels[:, 0] = -100  # [CLS] is never masked
    labels[1, 1] = ids[1, 1]
    return ids, types, mask.long(), labels, torch.tensor([0, 1, 1][:batch])


def _loss_and_grads(cls, subset, padded, dropout, kernels="none"):
    torch.manual_seed(0)
    cfg = CFG.replace(last_layer_subset=subset, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                      kernels=kernels)
    model = cls(cfg).train()
    for p in model.parameters():  # non-trivial biases and LayerNorm parameters
        torch.nn.init.normal_(p, std=0.1)
    ids, types, mask, labels, nsp = _batch()
    kw = {"next_sentence_label": nsp} if cls is BertForPreTraining else {}
    dropout_ids = torch.tensor([7, 2**50 + 3, 11]) if dropout else None
    if padded:
        out = model(ids, types, mask, mlm_labels=labels, dropout_ids=dropout_ids, **kw)
    else:
        real = mask.bool()
        cu = torch.nn.functional.pad(mask.sum(1).cumsum(0), (1, 0)).int()
        flat = labels[real]
        positions = (flat != -100).nonzero().flatten()
        out = model(ids[real], types[real], cu_seqlens=cu, masked_positions=positions, mlm_labels=flat[positions],
                    dropout_ids=dropout_ids, **kw)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
@pytest.mark.parametrize("cls", [BertForPreTraining, BertForMaskedLM])
def test_subset_last_layer_matches_full_layer(cls, padded, dropout):
    full, grads_full = _loss_and_grads(cls, False, padded, dropout)
    sub, grads_sub = _loss_and_grads(cls, True, padded, dropout)
    assert abs(sub.loss.item() - full.loss.item()) <= TOL
    assert torch.equal(sub.mlm_predictions, full.mlm_predictions)
    assert grads_sub.keys() == grads_full.keys()
    for name, g in grads_sub.items():
        assert (g - grads_full[name]).abs().max().item() <= TOL, name
    if dropout:  # the masks are active (the loss moves far more than TOL)
        assert abs(full.loss.item() - _loss_and_grads(cls, False, padded, 0.0)[0].loss.item()) > 100 * TOL


def test_subset_last_layer_matches_full_layer_triton(monkeypatch):
    """kernels='triton' (under the interpreter on CPU): the last layer's attention runs for its query rows only
    (kernels/attention_rows.py, once a step) and gives the full layer's loss and gradients."""
    pytest.importorskip("triton")
    from bertforge import ops

    calls = []
    rows_op = ops.attention_rows
    monkeypatch.setattr(ops, "attention_rows", lambda *a, **kw: calls.append(kw["backend"]) or rows_op(*a, **kw))
    full, grads_full = _loss_and_grads(BertForPreTraining, False, False, 0.1, kernels="triton")
    assert calls == []
    sub, grads_sub = _loss_and_grads(BertForPreTraining, True, False, 0.1, kernels="triton")
    assert calls == ["triton"]
    assert abs(sub.loss.item() - full.loss.item()) <= TOL
    for name, g in grads_sub.items():
        assert (g - grads_full[name]).abs().max().item() <= TOL, name


def test_subset_logits_are_the_masked_rows():
    torch.manual_seed(0)
    ids, types, mask, labels, _ = _batch()
    positions = (labels.flatten() != -100).nonzero().flatten()
    logits, rows = {}, {}
    for subset in (False, True):
        torch.manual_seed(0)
        model = BertForPreTraining(CFG.replace(last_layer_subset=subset)).eval()
        ffn = model.bert.encoder.layer[-1].intermediate
        ffn.register_forward_hook(lambda m, args, out, s=subset: rows.__setitem__(s, args[0].shape[:-1].numel()))
        with torch.no_grad():
            out = model(ids, types, mask, masked_positions=positions)
        logits[subset] = (out.mlm_logits, out.nsp_logits)
    assert rows == {False: ids.numel(), True: positions.numel() + ids.shape[0]}  # masked rows + [CLS] rows
    assert (logits[True][0] - logits[False][0]).abs().max() <= TOL
    assert (logits[True][1] - logits[False][1]).abs().max() <= TOL


def _train(cls, subset, dropout, seed_shift=0, steps=4):
    """`steps` AdamW updates (weight decay groups, clipping) on fresh batches from the same initial weights ->
    (losses per step, parameters after the last step). Per-sample dropout ids (sequence i of step s: 1000 s + i
    + seed_shift), as pretraining keys them."""
    from bertforge.optim import build_optimizer, param_groups

    torch.manual_seed(0)
    cfg = CFG.replace(last_layer_subset=subset, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    model = cls(cfg).train()
    optimizer = build_optimizer("adamw", param_groups(model, 0.01), 5e-3, eps=1e-8, fused=False)
    losses = []
    for step in range(steps):
        ids, types, mask, labels, nsp = _batch(seed=step)
        kw = {"next_sentence_label": nsp} if cls is BertForPreTraining else {}
        out = model(ids, types, mask, mlm_labels=labels, dropout_ids=torch.arange(3) + 1000 * step + seed_shift, **kw)
        optimizer.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(out.loss.item())
    return torch.tensor(losses), torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("cls", [BertForPreTraining, BertForMaskedLM])
def test_subset_last_layer_trains_like_the_full_layer(cls, dropout):
    """Several optimizer steps: the loss curve and the weights stay those of the full layer up to fp32 rounding
    (measured: loss <= 5e-7, weights <= 1.2e-6 after 4 steps), far below the spread that another dropout
    stream gives (loss ~2e-2, weights ~4e-2): a wrong gather, a mask keyed by the subset's row order, a missing gradient
    path through keys and values, or a lost parameter in the optimizer would all show here."""
    full_losses, full_params = _train(cls, False, dropout)
    sub_losses, sub_params = _train(cls, True, dropout)
    assert (sub_losses - full_losses).abs().max() <= 1e-5
    assert (sub_params - full_params).abs().max() <= 2e-5
    if dropout:  # the tolerance is far below the run-to-run noise of another dropout stream
        other_losses, other_params = _train(cls, False, dropout, seed_shift=7)
        assert (other_losses - full_losses).abs().max() > 100 * 1e-5
        assert (other_params - full_params).abs().max() > 100 * 2e-5


@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
def test_cls_classifier_subset_matches_full_layer(padded):
    """Sequence classification with [CLS] pooling: the last layer on the [CLS] rows only gives the full layer's
    logits, loss and gradients (fp32, dropout 0: the head's nn.Dropout draws from torch's generator), and its FFN
    sees one row per sequence. Mean pooling keeps the whole layer."""
    from bertforge.heads import BertForSequenceClassification

    ids, types, mask, _, labels = _batch()
    outs, grads, rows = {}, {}, {}
    for subset in (False, True):
        torch.manual_seed(0)
        model = BertForSequenceClassification(CFG.replace(last_layer_subset=subset, hidden_dropout_prob=0.0,
                                                          attention_probs_dropout_prob=0.0), 3).train()
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.1)
        ffn = model.bert.encoder.layer[-1].intermediate
        ffn.register_forward_hook(lambda m, args, out, s=subset: rows.__setitem__(s, args[0].shape[:-1].numel()))
        if padded:
            out = model(ids, types, mask, labels=labels)
        else:
            real = mask.bool()
            cu = torch.nn.functional.pad(mask.sum(1).cumsum(0), (1, 0)).int()
            out = model(ids[real], types[real], cu_seqlens=cu, labels=labels)
        out.loss.backward()
        outs[subset] = out
        grads[subset] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert rows == {False: int(mask.sum()) if not padded else ids.numel(), True: ids.shape[0]}
    assert (outs[True].logits - outs[False].logits).abs().max() <= TOL
    assert abs(outs[True].loss.item() - outs[False].loss.item()) <= TOL
    assert grads[True].keys() == grads[False].keys()
    for name, g in grads[True].items():
        assert (g - grads[False][name]).abs().max().item() <= TOL, name
    mean = BertForSequenceClassification(CFG.replace(last_layer_subset=True), 3, pooling="mean").eval()
    ffn = mean.bert.encoder.layer[-1].intermediate
    ffn.register_forward_hook(lambda m, args, out: rows.__setitem__("mean", args[0].shape[:-1].numel()))
    with torch.no_grad():
        mean(ids, types, mask)
    assert rows["mean"] == ids.numel()
