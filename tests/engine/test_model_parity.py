"""Our model vs transformers' BERT with the same random weights, fp32 on CPU: logits must agree to 1e-5."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from bertforge.config import ModelConfig, tiny  # noqa: E402
from bertforge.heads import (BertForMaskedLM, BertForPreTraining, BertForSequenceClassification,  # noqa: E402
                          BertForTokenClassification)
from bertforge.hf import export_hf, fuse_qkv, load_pretrained, read_config, split_qkv  # noqa: E402

CONFIG = tiny(vocab_size=211, hidden_size=48, num_attention_heads=3, intermediate_size=96, max_position_embeddings=64)
HF_CLASSES = {
    BertForPreTraining: "BertForPreTraining",
    BertForMaskedLM: "BertForMaskedLM",
    BertForSequenceClassification: "BertForSequenceClassification",
    BertForTokenClassification: "BertForTokenClassification",
}


def random_batch(batch=4, seq=23, vocab=211, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, seq + 1, (batch,), generator=g)
    lengths[0] = seq
    ids = torch.randint(5, vocab, (batch, seq), generator=g)
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    ids = ids * mask
    types = (torch.arange(seq)[None, :] >= (lengths[:, None] // 2)).long() * mask
    return ids, types, mask


def make_pair(cls, **kwargs):
    torch.manual_seed(0)
    ours = cls(CONFIG, **kwargs).eval()
    for p in ours.parameters():  # non-trivial biases and LayerNorm params so nothing hides behind zeros / ones
        torch.nn.init.normal_(p, std=0.05)
    hf_config = transformers.BertConfig(**CONFIG.to_hf_config(), num_labels=kwargs.get("num_labels", 2))
    theirs = getattr(transformers, HF_CLASSES[cls])(hf_config).eval()
    missing, unexpected = theirs.load_state_dict(split_qkv(ours.state_dict()), strict=False)
    assert not unexpected and all("position_ids" in k for k in missing)
    return ours, theirs


def max_err(a, b):
    return (a - b).abs().max().item()


def test_pretraining_logits_match_hf():
    ours, theirs = make_pair(BertForPreTraining)
    ids, types, mask = random_batch()
    with torch.no_grad():
        out = ours(ids, types, mask)
        ref = theirs(input_ids=ids, token_type_ids=types, attention_mask=mask)
    real = mask.bool()
    assert max_err(out.mlm_logits[real], ref.prediction_logits[real]) < 1e-5
    assert max_err(out.nsp_logits, ref.seq_relationship_logits) < 1e-5


def test_masked_lm_logits_match_hf_and_have_no_sentence_head():
    ours, theirs = make_pair(BertForMaskedLM)
    assert not any(k.startswith(("bert.pooler", "cls.seq_relationship")) for k in ours.state_dict())
    ids, types, mask = random_batch(seed=4)
    with torch.no_grad():
        out = ours(ids, types, mask)
        ref = theirs(input_ids=ids, token_type_ids=types, attention_mask=mask)
    real = mask.bool()
    assert max_err(out.mlm_logits[real], ref.logits[real]) < 1e-5
    assert out.nsp_logits is None and out.nsp_loss is None
    labels = torch.where(real & (ids % 3 == 0), ids, torch.full_like(ids, -100))
    with torch.no_grad():
        loss = ours(ids, types, mask, mlm_labels=labels).loss
        ref_loss = theirs(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=labels).loss
    assert abs(loss.item() - ref_loss.item()) < 1e-5


def test_masked_rows_only_head_matches_full_head():
    ours, _ = make_pair(BertForPreTraining)
    ids, types, mask = random_batch()
    positions = mask.flatten().nonzero().flatten()[::3]
    with torch.no_grad():
        full = ours(ids, types, mask).mlm_logits.flatten(0, 1)
        sparse = ours(ids, types, mask, masked_positions=positions).mlm_logits
    assert max_err(sparse, full[positions]) < 1e-6


@pytest.mark.parametrize("cls", [BertForSequenceClassification, BertForTokenClassification])
def test_classifier_logits_match_hf(cls):
    ours, theirs = make_pair(cls, num_labels=5)
    ids, types, mask = random_batch(seed=1)
    with torch.no_grad():
        out = ours(ids, types, mask).logits
        ref = theirs(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
    if cls is BertForTokenClassification:
        out, ref = out[mask.bool()], ref[mask.bool()]
    assert max_err(out, ref) < 1e-5


@pytest.mark.parametrize("cls", [BertForPreTraining, BertForMaskedLM, BertForSequenceClassification,
                                 BertForTokenClassification])
def test_export_loads_in_transformers_without_missing_keys(cls, tmp_path):
    pretraining = cls in (BertForPreTraining, BertForMaskedLM)
    kwargs = {} if pretraining else {"num_labels": 3}
    ours, _ = make_pair(cls, **kwargs)
    id2label = None if pretraining else {0: "a", 1: "b", 2: "c"}
    export_hf(ours, tmp_path / "out", id2label=id2label)
    hf_cls = getattr(transformers, HF_CLASSES[cls])
    theirs, info = hf_cls.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids, types, mask = random_batch(seed=2)
    with torch.no_grad():
        ref = theirs.eval()(input_ids=ids, token_type_ids=types, attention_mask=mask)
        out = ours(ids, types, mask)
    if cls is BertForPreTraining:
        real = mask.bool()
        assert max_err(out.mlm_logits[real], ref.prediction_logits[real]) < 1e-5
    elif cls is BertForMaskedLM:
        real = mask.bool()
        assert max_err(out.mlm_logits[real], ref.logits[real]) < 1e-5
    elif cls is BertForTokenClassification:
        assert max_err(out.logits[mask.bool()], ref.logits[mask.bool()]) < 1e-5
    else:
        assert max_err(out.logits, ref.logits) < 1e-5
    # and our own loader reads the export back bit-exactly
    again = cls(read_config(tmp_path / "out"), **kwargs).eval()
    report = load_pretrained(tmp_path / "out", again)
    assert report.initialised == []
    for (k, a), b in zip(ours.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_padded_and_unpadded_paths_agree():
    torch.manual_seed(3)
    model = BertForPreTraining(CONFIG).eval()
    ids, types, mask = random_batch(batch=5, seq=31, seed=3)
    with torch.no_grad():
        padded = model(ids, types, mask)
        lengths = mask.sum(1)
        cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).int()
        real = mask.bool()
        unpadded = model(ids[real], types[real], cu_seqlens=cu, max_seqlen=int(lengths.max()))
    assert max_err(padded.mlm_logits[real], unpadded.mlm_logits) < 1e-5
    assert max_err(padded.nsp_logits, unpadded.nsp_logits) < 1e-5


def test_fuse_and_split_qkv_are_inverse_and_keep_hf_order():
    ours, theirs = make_pair(BertForMaskedLM)
    hf = {k: v for k, v in theirs.state_dict().items() if "position_ids" not in k}
    fused = fuse_qkv(hf)
    prefix = "bert.encoder.layer.1.attention.self"
    assert not any(".query." in k or ".key." in k or ".value." in k for k in fused)
    assert torch.equal(fused[f"{prefix}.Wqkv.weight"][48:96], hf[f"{prefix}.key.weight"])  # rows: q, k, v
    assert torch.equal(fused[f"{prefix}.Wqkv.bias"][96:], hf[f"{prefix}.value.bias"])
    ours_state = ours.state_dict()
    assert fused.keys() == ours_state.keys()
    assert all(torch.equal(fused[k], ours_state[k]) for k in fused)
    back = split_qkv(fused)
    assert back.keys() == hf.keys() and all(torch.equal(back[k], hf[k]) for k in hf)
    partial = {k: v for k, v in hf.items() if k != f"{prefix}.value.bias"}  # an incomplete triple stays unfused
    assert f"{prefix}.query.bias" in fuse_qkv(partial) and f"{prefix}.Wqkv.weight" in fuse_qkv(partial)
