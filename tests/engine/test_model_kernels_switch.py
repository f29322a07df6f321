"""The engine with every Triton kernel on (kernels='triton', interpreter on CPU) gives the same loss and gradients as
the pure-torch path (kernels='none'), padded and unpadded, within fp32 noise (Liger-Kernel's convergence tests, at
model scale); also at dropout 0.1 with per-sample dropout ids, where both backends draw the same Philox masks."""
import pytest
import torch

pytest.importorskip("triton")

from bertforge.config import tiny  # noqa: E402
from bertforge.heads import BertForPreTraining  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# fp32 on CPU (interpreter) is exact to rounding; on a GPU, Triton's fp32 dots may use TF32 (10-bit mantissa).
LOSS_TOL, GRAD_TOL = (1e-5, 1e-4) if DEVICE.type == "cpu" else (2e-3, 3e-2)
CFG = tiny(vocab_size=301, hidden_size=64, num_attention_heads=2, intermediate_size=128, max_position_embeddings=64,
           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _batch(seed=0, batch=3, seq=19):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([seq, 1, 11][:batch])
    mask = torch.arange(seq)[None, :] < lengths[:, None]
    ids = torch.randint(5, CFG.vocab_size, (batch, seq), generator=g) * mask
    types = (torch.arange(seq)[None, :] >= lengths[:, None] // 2).long() * mask
    labels = torch.where(torch.rand(batch, seq, generator=g) < 0.3, ids, -100) * mask + (-100) * (~mask)
    labels[0, 1] = ids[0, 1]
    return ids, types, mask.long(), labels, torch.tensor([0, 1, 1][:batch])


def _loss_and_grads(kernels, padded, dropout=0.0, dropout_bits=8):
    torch.manual_seed(0)
    cfg = CFG.replace(kernels=kernels, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                      dropout_bits=dropout_bits)
    model = BertForPreTraining(cfg).to(DEVICE).train()
    ids, types, mask, labels, nsp = (t.to(DEVICE) for t in _batch())
    dropout_ids = torch.tensor([3, 2**61 + 5, 2**40], device=DEVICE) if dropout else None
    if padded:
        out = model(ids, types, mask, mlm_labels=labels, next_sentence_label=nsp, dropout_ids=dropout_ids)
    else:
        real = mask.bool()
        cu = torch.nn.functional.pad(mask.sum(1).cumsum(0), (1, 0)).int()
        out = model(ids[real], types[real], cu_seqlens=cu, mlm_labels=labels[real], next_sentence_label=nsp,
                    dropout_ids=dropout_ids)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
def test_triton_kernels_match_torch_path(padded, dropout):
    loss_ref, grads_ref = _loss_and_grads("none", padded, dropout)
    loss, grads = _loss_and_grads("triton", padded, dropout)
    if dropout:  # the masks are active: the loss is not the one without dropout
        assert abs(loss_ref.item() - _loss_and_grads("none", padded)[0].item()) > 1e-3
    assert abs(loss.item() - loss_ref.item()) < LOSS_TOL
    assert grads.keys() == grads_ref.keys()
    for name, g in grads.items():
        scale = grads_ref[name].abs().max().item()
        assert (g - grads_ref[name]).abs().max().item() <= GRAD_TOL * max(scale, 1e-3), name


def test_24_bit_dropout_matches_too_and_differs_from_8_bit():
    """dropout_bits=24 (one Philox call per 4 elements) reaches every site on both backends: they agree, and the
    masks are not the 8-bit ones."""
    loss_ref, grads_ref = _loss_and_grads("none", False, 0.1, dropout_bits=24)
    loss, grads = _loss_and_grads("triton", False, 0.1, dropout_bits=24)
    assert abs(loss.item() - loss_ref.item()) < LOSS_TOL
    for name, g in grads.items():
        scale = grads_ref[name].abs().max().item()
        assert (g - grads_ref[name]).abs().max().item() <= GRAD_TOL * max(scale, 1e-3), name
    assert abs(loss_ref.item() - _loss_and_grads("none", False, 0.1)[0].item()) > 1e-4
