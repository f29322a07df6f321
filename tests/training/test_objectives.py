"""The three pretraining objectives end to end on a slice of the Wikipedia extracts: each trains, resumes exactly,
reports its own sentence-task metrics (or none), and exports to the Hugging Face class transformers loads with no
missing or unexpected keys and the same logits; MLM-only on 2 ranks (ZeRO 2) equals 1 rank (dropout 0)."""
import json

import numpy as np
import pytest
import torch

from bertforge.config.pretrain import OBJECTIVES, PretrainConfig
from bertforge.data.source import CorpusSource
from tests.training.conftest import run_worker

FP32_ATOL = 1e-5  # as tests/training/test_multirank.py: summation order only


@pytest.fixture(scope="module")
def one_rank(prepared, tokenizer_dir, tmp_path_factory):
    """{objective: (run folder, corpus.json entry)} of a 6-step unpadded fp32 run (+ resumed from step 3) each."""
    out = {}
    for objective in OBJECTIVES:
        folder = tmp_path_factory.mktemp(objective.replace("+", "_"))
        run_worker("corpus", folder, prepared[0], tokenizer_dir, "unpadded", OBJECTIVE=objective, timeout=600)
        out[objective] = folder, json.loads((folder / "corpus.json").read_text())["unpadded"]
    return out


def _source(prepared, tokenizer_dir, rank, world, objective):
    cfg = PretrainConfig.from_flat(output_dir="unused", data_dir=str(prepared[0]), tokenizer=str(tokenizer_dir),
                                   max_seq_length=64, micro_batch=4, global_batch=8, steps=1, objective=objective)
    source = CorpusSource(cfg, rank, world)
    source.start()
    return source


@pytest.mark.parametrize("objective", ["mlm+sop", "mlm"])
def test_micro_batch_k_goes_to_rank_k_mod_world(prepared, tokenizer_dir, objective):
    single = _source(prepared, tokenizer_dir, 0, 1, objective)
    ranks = [_source(prepared, tokenizer_dir, r, 2, objective) for r in range(2)]
    for _ in range(3):
        for r in range(2):
            a, b = single.next_batch(), ranks[r].next_batch()
            np.testing.assert_array_equal(a.input_ids, b.input_ids)
            np.testing.assert_array_equal(a.mlm_labels, b.mlm_labels)
            np.testing.assert_array_equal(a.next_sentence_label, b.next_sentence_label)
    batch = single.next_batch()
    if objective == "mlm":
        assert (batch.token_type_ids == 0).all() and (batch.next_sentence_label == -100).all()
        assert (batch.attention_mask.sum(1) == 64).sum() >= 3  # full sequences (only the corpus tail is shorter)
    else:
        assert set(batch.next_sentence_label.tolist()) <= {0, 1} and (batch.token_type_ids == 1).any()


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_objective_trains_resumes_reports_and_exports(one_rank, objective, tmp_path):
    folder, res = one_rank[objective]
    assert len(res["full"]) == 6 and res["resumed"] == res["full"][3:]  # fp32 resume: identical losses
    task = {"mlm+nsp": "nsp", "mlm+sop": "sop", "mlm": None}[objective]
    sentence = lambda keys: {k for k in keys if k.startswith(("nsp_", "sop_"))}  # noqa: E731
    assert sentence(res["train_keys"]) == ({f"{task}_loss", f"{task}_acc"} if task else set())
    assert sentence(res["eval_keys"]) == ({f"{task}_acc"} if task else set())
    assert "mlm_acc" in res["eval_keys"] and "mlm_unigram_acc" in res["eval_keys"]

    from bertforge.training.weights import export_checkpoint, load_model_from_checkpoint

    transformers = pytest.importorskip("transformers")
    hf_dir = export_checkpoint(folder / "unpadded" / "full", tmp_path / "hf")
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["pretraining_objective"] == objective
    hf_cls = transformers.BertForMaskedLM if objective == "mlm" else transformers.BertForPreTraining
    assert config["architectures"] == [hf_cls.__name__]
    hf_model, info = hf_cls.from_pretrained(str(hf_dir), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ours = load_model_from_checkpoint(folder / "unpadded" / "full").eval()
    ids = torch.randint(5, 3000, (2, 13))
    with torch.no_grad():
        ref = hf_model.eval()(input_ids=ids)
        got = ours(input_ids=ids)
    if objective == "mlm":
        torch.testing.assert_close(got.mlm_logits, ref.logits, atol=1e-4, rtol=1e-4)
        assert got.nsp_logits is None
    else:
        torch.testing.assert_close(got.mlm_logits, ref.prediction_logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got.nsp_logits, ref.seq_relationship_logits, atol=1e-4, rtol=1e-4)


def test_mlm_only_two_ranks_equal_one_rank(one_rank, prepared, tokenizer_dir, tmp_path):
    """The MLM-only path (full-sequence dataset, no sentence head, no NSP labels) on 2 gloo ranks with ZeRO 2 gives
    the 1-rank loss curve (dropout 0, same global batch) and resumes exactly."""
    run_worker("corpus", tmp_path, prepared[0], tokenizer_dir, "unpadded", OBJECTIVE="mlm", ZERO=2, ranks=2,
               timeout=600)
    two = json.loads((tmp_path / "corpus.json").read_text())["unpadded"]
    one = one_rank["mlm"][1]
    assert len(two["full"]) == 6 and max(abs(a - b) for a, b in zip(one["full"], two["full"])) < FP32_ATOL, (one, two)
    assert two["resumed"] == two["full"][3:]
    assert not any(k.startswith(("nsp_", "sop_")) for k in two["train_keys"] + two["eval_keys"])
