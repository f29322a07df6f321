"""kernels/tied_grad.py: the tied word-embedding / MLM-decoder weight's gradient handed from the decoder's backward to
the embedding's (CPU path): the same gradients as autograd's sum within the sum's own fp32 rounding (both against
fp64), through gradient accumulation and a third use of the weight; a graph cut between the embedding and the loss
raises instead of dropping the decoder's gradient; off, or with host memory not reused, autograd sums as before."""
import pytest
import torch

from bertforge.config import preset
from bertforge.heads import BertForPreTraining
from bertforge.kernels import host_buffers, tied_grad

CFG = preset("tiny", vocab_size=211, hidden_size=32, num_attention_heads=2, intermediate_size=64,
             max_position_embeddings=32, kernels="none", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(autouse=True)
def _defaults():
    tied_grad.use(True)
    host_buffers.reuse(True)
    yield
    tied_grad.use(True)
    host_buffers.reuse(True)


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([17, 5, 11])
    ids = torch.randint(5, 211, (int(lengths.sum()),), generator=g)
    ids[:4] = ids[4]  # a repeated token: rows of one id summed into one gradient row
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.4, ids, -100)
    labels[0] = ids[0]
    cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).int()
    return dict(input_ids=ids, token_type_ids=torch.zeros_like(ids), cu_seqlens=cu, mlm_labels=labels,
                next_sentence_label=torch.tensor([0, 1, 1]))


def _grads(model, steps=(0,), extra_use=False, dtype=torch.float32):
    model.zero_grad(set_to_none=True)
    for seed in steps:
        loss = model(**_batch(seed)).loss
        if extra_use:  # a third use of the tied weight
            loss = loss + model.bert.embeddings.word_embeddings.weight[:7].pow(2).sum() * 1e-2
        loss.backward()
    return {n: p.grad.to(dtype).clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("case", ["one step", "accumulated", "third use"])
def test_same_gradients_as_autograds_sum(case, monkeypatch):
    kw = {"one step": {}, "accumulated": {"steps": (0, 1, 2)}, "third use": {"extra_use": True}}[case]
    delivered = []
    deliver = tied_grad.deliver
    monkeypatch.setattr(tied_grad, "deliver", lambda h, g: (delivered.append(g.shape), deliver(h, g)))
    torch.manual_seed(0)
    model = BertForPreTraining(CFG).train()
    exact = _grads(model.double(), **kw)  # fp64: plain autograd (the CPU paths are fp32 only)
    model.float()
    tied_grad.use(False)
    summed = _grads(model, **kw)
    tied_grad.use(True)
    assert not delivered
    handed = _grads(model, **kw)
    assert delivered == [(211, 32)] * len(kw.get("steps", (0,)))  # the handoff ran once a step
    name = "bert.embeddings.word_embeddings.weight"
    assert name in handed and set(handed) == set(summed)
    for n in handed:
        err_handed = (handed[n].double() - exact[n]).abs().max().item()
        err_summed = (summed[n].double() - exact[n]).abs().max().item()
        assert err_summed <= 1e-5 * exact[n].abs().max().item() + 1e-9, (n, err_summed)  # fp32 vs fp64: sane
        assert err_handed <= 2 * err_summed + 1e-9, (n, err_handed, err_summed)
    assert not torch.equal(handed[name], torch.zeros_like(handed[name]))


def test_a_graph_cut_raises_instead_of_dropping_the_decoder_gradient():
    from bertforge import ops

    weight = torch.randn(50, 8, requires_grad=True)
    ids = torch.tensor([1, 2, 3, 2])
    hidden = ops.embedding(ids, weight).detach().requires_grad_()  # the embedding's backward will not run
    loss, _ = ops.masked_lm_loss(hidden, weight, torch.zeros(50), torch.tensor([4, -100, 7, 9]))
    with pytest.raises(RuntimeError, match="gradient was not collected"):
        loss.backward()
    tied_grad.use(False)
    hidden = ops.embedding(ids, weight).detach().requires_grad_()
    weight.grad = None
    loss, _ = ops.masked_lm_loss(hidden, weight, torch.zeros(50), torch.tensor([4, -100, 7, 9]))
    loss.backward()  # off: autograd keeps the decoder's gradient alone
    assert weight.grad is not None and bool(weight.grad.abs().sum() > 0)


@pytest.mark.parametrize("off", ["tied_grad off", "reuse off"])
def test_off_hands_nothing(off):
    (tied_grad.use if off == "tied_grad off" else host_buffers.reuse)(False)
    torch.manual_seed(0)
    model = BertForPreTraining(CFG).train()
    weight = model.bert.embeddings.word_embeddings.weight
    model(**_batch(0)).loss.backward()
    assert weight.grad is not None and not tied_grad._PENDING
