"""Per-sample dropout streams in the model (engine/model.py `dropout_ids`): a sample's masks follow its id, not its
batch, place or layout; every site (embeddings; per layer attention probabilities, attention output, FFN output)
has its own key, keeps 1 - p of the elements within binomial bounds, and differs from the other sites, samples and
epochs; eval ignores the ids; without ids dropout draws from torch's generator as it always did."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bertforge import ops
from bertforge.config import tiny
from bertforge.data.source import sample_dropout_ids
from bertforge.model import BertModel
from bertforge.kernels.reference import attention_dropout_keep_ref, layer_norm_dropout_keep_ref

P = 0.1
CFG = tiny(vocab_size=301, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
           max_position_embeddings=64, hidden_dropout_prob=P, attention_probs_dropout_prob=P)


def _model(**kw):
    torch.manual_seed(0)
    return BertModel(CFG.replace(**kw), add_pooling_layer=False).train()


def _samples(n=4, seq=23, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([23, 9, 17, 14][:n])
    mask = torch.arange(seq)[None, :] < lengths[:, None]
    return torch.randint(5, CFG.vocab_size, (n, seq), generator=g) * mask, mask.long()


IDS = torch.from_numpy(sample_dropout_ids(7, 0, np.arange(4)))


@pytest.mark.parametrize("kernels", ["none", "triton"])
def test_a_samples_output_follows_its_id_not_its_batch_or_layout(kernels):
    if kernels == "triton":
        pytest.importorskip("triton")
    model = _model(kernels=kernels)
    ids, mask = _samples()
    full = model(ids, attention_mask=mask, dropout_ids=IDS)[0]
    order = [2, 0]  # another batch: other neighbours, another place
    moved = model(ids[order], attention_mask=mask[order], dropout_ids=IDS[order])[0]
    real = mask.bool()
    for new, old in enumerate(order):
        n = int(real[old].sum())
        torch.testing.assert_close(moved[new, :n], full[old, :n], atol=2e-6, rtol=1e-5)
    cu = F.pad(mask[order].sum(1).cumsum(0), (1, 0)).int()  # the same two samples unpadded
    unpadded = model(ids[order][real[order]], cu_seqlens=cu, dropout_ids=IDS[order])[0]
    torch.testing.assert_close(unpadded, moved[real[order]], atol=2e-6, rtol=1e-5)
    other = model(ids[order], attention_mask=mask[order], dropout_ids=IDS[[1, 0]])[0]  # sample 2 with another id
    assert not torch.allclose(other[0], moved[0]) and torch.allclose(other[1], moved[1], atol=2e-6, rtol=1e-5)


def _recorded_masks(monkeypatch, model, ids, mask, dropout_ids):
    """Run a forward and rebuild every site's keep mask from the seed and row ids it was called with:
    [(site seed, keep over the real tokens (n_real * h,) or real (query, key) pairs, flattened sample-major)]."""
    calls = []
    for name in ("dropout", "linear_bias_dropout_add_layernorm", "attention"):
        real_op = getattr(ops, name)

        def record(*args, _op=real_op, _name=name, **kw):
            calls.append((_name, args, kw))
            return _op(*args, **kw)
        monkeypatch.setattr(ops, name, record)
    model(ids, attention_mask=mask, dropout_ids=dropout_ids)
    real = mask.bool()
    B, S = ids.shape
    out = []
    for name, args, kw in calls:
        seed, rows, bits = kw["seed"], kw["row_ids"], kw["dropout_bits"]
        if name == "attention":
            keep = attention_dropout_keep_ref(seed, B, CFG.num_attention_heads, S, P, rows,
                                              dropout_bits=bits)  # (B, nh, S, S)
            pairs = real[:, None, :, None] & real[:, None, None, :]
            out.append((int(seed), keep[pairs.expand_as(keep)]))
        else:
            keep = layer_norm_dropout_keep_ref(seed, B * S, CFG.hidden_size, P, rows, dropout_bits=bits)  # (B*S, h)
            out.append((int(seed), keep[real.flatten()].flatten()))
    return out


@pytest.mark.parametrize("bits", [8, 24])
def test_every_site_has_its_own_key_and_keeps_1_minus_p(monkeypatch, bits):
    """Every site keeps 1 - p_q, p_q the model's quantised probability (ModelConfig.applied_dropout)."""
    ids, mask = _samples()
    model = _model(dropout_bits=bits)
    masks = _recorded_masks(monkeypatch, model, ids, mask, IDS)
    assert len(masks) == 1 + 3 * CFG.num_hidden_layers
    assert len({seed for seed, _ in masks}) == len(masks)  # one key per site, layers included
    p_q = model.config.applied_dropout()["hidden_dropout_prob"]
    assert p_q == (26 / 256 if bits == 8 else round(P * 2**24) / 2**24)
    for seed, keep in masks:
        n = keep.numel()
        assert abs(int(keep.sum()) - n * (1 - p_q)) < 5 * math.sqrt(n * p_q * (1 - p_q)), seed
    a, b = masks[2][1], masks[5][1]  # layer 0's and layer 1's attention output: same shapes, other keys
    assert (a != b).float().mean().item() > P  # independent masks differ in ~2 p (1 - p) = 18% of the elements


def test_masks_differ_across_samples_and_epochs(monkeypatch):
    ids, mask = _samples()
    same = ids[[0, 0]], mask[[0, 0]]  # one sample twice
    model = _model()
    twins = _recorded_masks(monkeypatch, model, *same, IDS[[0, 1]])  # under two ids: two masks
    monkeypatch.undo()
    next_epoch = torch.from_numpy(sample_dropout_ids(7, 1, np.arange(2)))
    later = _recorded_masks(monkeypatch, model, *same, next_epoch[[0, 0]])
    for (_, pair), (_, again) in zip(twins, later):
        half = pair.numel() // 2
        first, second = pair[:half], pair[half:]
        assert (first != second).float().mean().item() > P
        assert (first != again[:half]).float().mean().item() > P  # the same sample in the next epoch
        assert torch.equal(again[:half], again[half:])  # the same id twice: the same masks


def test_eval_ignores_the_ids_and_a_bad_shape_is_refused():
    model = _model()
    ids, mask = _samples()
    with pytest.raises(ValueError, match="one per sequence"):
        model(ids, attention_mask=mask, dropout_ids=IDS[:3])
    model.eval()
    a = model(ids, attention_mask=mask, dropout_ids=IDS)[0]
    assert torch.equal(a, model(ids, attention_mask=mask)[0])


def test_without_ids_dropout_draws_from_torchs_generator():
    """The behaviour callers without ids (finetuning, direct calls) always had: the embeddings' dropout is
    F.dropout on torch's generator, and a forward is reproducible under torch.manual_seed only."""
    model = _model()
    ids, mask = _samples()
    emb = model.embeddings
    pos = torch.arange(ids.shape[1]).expand_as(ids)
    types = torch.zeros_like(ids)
    torch.manual_seed(3)
    got = emb(ids, types, pos)
    torch.manual_seed(3)
    x = emb.word_embeddings(ids) + emb.position_embeddings(pos) + emb.token_type_embeddings(types)
    assert torch.equal(got, F.dropout(emb.LayerNorm(x), CFG.applied_dropout()["hidden_dropout_prob"]))
    torch.manual_seed(4)
    a = model(ids, attention_mask=mask)[0]
    torch.manual_seed(4)
    assert torch.equal(a, model(ids, attention_mask=mask)[0])
    assert not torch.equal(a, model(ids, attention_mask=mask)[0])


def test_site_keys_are_buffers_that_are_never_saved():
    model = _model()
    seeds = {name: int(buf) for name, buf in model.named_buffers() if name.endswith("dropout_seed")}
    assert len(seeds) == 1 + 3 * CFG.num_hidden_layers and len(set(seeds.values())) == len(seeds)
    assert not any("dropout_seed" in key for key in model.state_dict())
    assert seeds == {name: int(buf) for name, buf in _model().named_buffers() if name.endswith("dropout_seed")}


@pytest.mark.parametrize("kernels", ["none", "triton"])
@pytest.mark.parametrize("head", ["classify-cls", "classify-mean", "ner"])
def test_task_heads_key_their_own_dropout_per_sample(head, kernels):
    """The finetuning heads (their encoder and their own dropout) at p = 0.1 with dropout ids: a sample's logits
    follow its id, not its batch, place or layout (padded vs unpadded), and the head's mask is active (its logits
    differ from the same call with the head's dropout off)."""
    from bertforge.heads import BertForSequenceClassification, BertForTokenClassification

    if kernels == "triton":
        pytest.importorskip("triton")
    torch.manual_seed(0)
    cfg = CFG.replace(kernels=kernels)
    if head == "ner":
        model = BertForTokenClassification(cfg, 5).train()
    else:
        model = BertForSequenceClassification(cfg, 3, pooling=head.split("-")[1]).train()
    ids, mask = _samples()
    real = mask.bool()
    full = model(ids, attention_mask=mask, dropout_ids=IDS).logits
    order = [2, 0]
    moved = model(ids[order], attention_mask=mask[order], dropout_ids=IDS[order]).logits
    cu = F.pad(mask.sum(1).cumsum(0), (1, 0)).int()
    flat = model(ids[real], cu_seqlens=cu, dropout_ids=IDS).logits
    for new, old in enumerate(order):
        want = full[old, :int(real[old].sum())] if head == "ner" else full[old]
        got = moved[new, :int(real[old].sum())] if head == "ner" else moved[new]
        torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(flat, full[real] if head == "ner" else full, atol=2e-6, rtol=1e-5)
    model.dropout.p = 0.0
    assert (model(ids, attention_mask=mask, dropout_ids=IDS).logits - full).abs().max() > 1e-3
