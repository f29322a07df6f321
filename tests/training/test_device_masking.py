"""--masking device: the loader ships unmasked ids with special-token masks, the step masks them on the device
(engine/training/device_masking.py) with the torch reference or the Triton kernel (interpreter here). Rates are
checked within binomial bounds; seeds make it deterministic; the corpus source and the loop wire it end to end."""
import json
import math

import numpy as np
import pytest
import torch

from bertforge.config.pretrain import PretrainConfig
from bertforge.data.source import mask_seed
from bertforge.data.synthetic import MASK_ID, SyntheticSource
from bertforge.errors import ConfigError
from bertforge.training.device_masking import DeviceMasker
from bertforge.training.trainer import model_inputs
from tests.training.conftest import run_worker

CPU = torch.device("cpu")


def _within(count, n, p, sigmas=5.0):
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    assert abs(count - mean) <= sigmas * sd + 1, (count, mean, sd)


def _synthetic_batch(vocab=500, seq=64, batch=16, index=0):
    src = SyntheticSource(vocab, seq, batch, seed=3, mask=False)
    return src, src.batch_at(index)


def test_mask_seed_is_deterministic_and_spread():
    seeds = {mask_seed(1234, e, k) for e in range(3) for k in range(200)}
    assert len(seeds) == 600 and all(0 <= s < 2 ** 62 for s in seeds)
    assert mask_seed(1234, 0, 5) == mask_seed(1234, 0, 5) != mask_seed(1235, 0, 5)


@pytest.mark.parametrize("backend", ["none", "triton"])
@pytest.mark.parametrize("unpadded", [False, True])
def test_rates_specials_and_labels(backend, unpadded):
    if backend == "triton":
        pytest.importorskip("triton")
    src, batch = _synthetic_batch()
    masker = DeviceMasker(MASK_ID, src.replacement_probs, 0.15, backend, CPU)
    inputs = model_inputs(batch, unpadded, CPU, masker)
    original = (batch.input_ids_unpad if unpadded else batch.input_ids).reshape(-1)
    special = batch.special_mask(unpadded).reshape(-1)
    positions, labels = inputs["masked_positions"], inputs["mlm_labels"]
    masked = inputs["input_ids"].reshape(-1)
    assert not special[positions].any()  # [CLS], [SEP], [PAD] never chosen
    assert torch.equal(labels, original[positions])  # labels are the original ids
    untouched = torch.ones_like(special)
    untouched[positions] = False
    assert torch.equal(masked[untouched], original[untouched])  # only chosen positions change
    n = int((~special).sum())
    _within(len(positions), n, 0.15)
    became_mask = int((masked[positions] == MASK_ID).sum())
    _within(became_mask, len(positions), 0.8)
    random_or_kept = masked[positions] != MASK_ID
    assert int(random_or_kept.sum()) == len(positions) - became_mask
    assert (masked[positions][random_or_kept] >= 5).all()  # random replacements avoid special tokens
    raw = {"input_ids": batch.input_ids_unpad if unpadded else batch.input_ids}
    again = masker(raw, batch.special_mask(unpadded), int(batch.mask_seed))
    assert torch.equal(again["masked_positions"], positions)  # deterministic for a seed
    other = masker(raw, batch.special_mask(unpadded), 99)
    assert not torch.equal(other["masked_positions"], positions)


def test_rates_over_many_batches_kernel():
    """80/10/10 on ~20k chosen positions with the Triton kernel (kept = unchanged token, random = any other)."""
    pytest.importorskip("triton")
    src = SyntheticSource(500, 128, 64, seed=5, mask=False)
    masker = DeviceMasker(MASK_ID, src.replacement_probs, 0.15, "triton", CPU)
    chosen = to_mask = kept = 0
    for k in range(3):
        batch = src.batch_at(k)
        inputs = masker({"input_ids": batch.input_ids_unpad}, batch.special_tokens_mask_unpad, int(batch.mask_seed))
        new = inputs["input_ids"][inputs["masked_positions"]]
        chosen += len(new)
        to_mask += int((new == MASK_ID).sum())
        kept += int((new == inputs["mlm_labels"]).sum())
    _within(to_mask, chosen, 0.8)
    # kept: the 10% "unchanged" share plus random draws that hit the same token (1/495 of the 10%)
    _within(kept, chosen, 0.1 + 0.1 / 495)


def test_masker_refuses_unmasked_source_mismatch():
    src, batch = _synthetic_batch()
    masker = DeviceMasker(MASK_ID, src.replacement_probs, 0.15, "none", CPU)
    with pytest.raises(ValueError, match="special-token mask"):
        masker({"input_ids": batch.input_ids_unpad}, batch.special_tokens_mask, 1)
    masked_batch = SyntheticSource(500, 64, 4, seed=3).batch_at(0)
    with pytest.raises(ValueError, match="mask_seed"):
        model_inputs(masked_batch, True, CPU, masker)


def test_config_rules():
    with pytest.raises(ConfigError, match="--masking: invalid choice 'gpu'"):
        PretrainConfig.from_flat(masking="gpu")
    with pytest.raises(ConfigError, match="host only"):
        PretrainConfig.from_flat(masking="device", whole_word_masking=True)
    with pytest.raises(ConfigError, match="zero-stage 3"):
        PretrainConfig.from_flat(compile=True, zero_stage=3)


def test_corpus_source_ships_unmasked_batches(prepared, tokenizer_dir):
    from bertforge.data.source import CorpusSource

    for pack in (False, True):
        cfg = PretrainConfig.from_flat(output_dir="unused", data_dir=str(prepared[0]), tokenizer=str(tokenizer_dir),
                                       max_seq_length=64, micro_batch=4, global_batch=4, steps=1, masking="device",
                                       unpadded=True, pack=pack)
        source = CorpusSource(cfg, 0, 1)
        source.start()
        host = CorpusSource(cfg.replace(masking="host"), 0, 1)
        host.start()
        batch, masked = source.batch_at(2), host.batch_at(2)
        assert batch.mlm_labels is None and batch.mask_seed == mask_seed(cfg.run.seed, 0, 2)
        ids, special = batch.input_ids_unpad, batch.special_tokens_mask_unpad
        assert ids.shape == special.shape == masked.input_ids_unpad.shape
        # unmasked: the host-masked ids differ exactly at the host's masked positions that were replaced
        host_ids = masked.input_ids_unpad
        changed = (ids != host_ids).nonzero().flatten()
        assert set(changed.tolist()) <= set(masked.masked_positions_unpad.tolist())
        assert set(ids[special].unique().tolist()) <= {0, 2, 3}  # [PAD] / [CLS] / [SEP] (packed row tails: [PAD])
        assert not np.isin(ids[~special].numpy(), [0, 2, 3]).any()
        assert special[batch.cls_positions_unpad].all()
        assert source.mask_token_id == 4 and source.replacement_probs.shape == (source.vocab_size,)


def test_loop_resumes_exactly_and_two_ranks_equal_one(prepared, tokenizer_dir, tmp_path):
    run_worker("corpus", tmp_path / "one", prepared[0], tokenizer_dir, "unpadded-device,packed-device", ZERO=2,
               timeout=500)
    run_worker("corpus", tmp_path / "two", prepared[0], tokenizer_dir, "unpadded-device", ZERO=2, ranks=2,
               timeout=400)
    one = json.loads((tmp_path / "one" / "corpus.json").read_text())
    two = json.loads((tmp_path / "two" / "corpus.json").read_text())["unpadded-device"]
    for layout in ("unpadded-device", "packed-device"):
        full = one[layout]["full"]
        assert len(full) == 6 and full[-1] < full[0], full
        assert one[layout]["resumed"] == full[3:], layout
    # (device masks follow the layout's flat order, so packed and unpacked mask different tokens: both must learn)
    np.testing.assert_allclose(two["full"], one["unpadded-device"]["full"], rtol=0, atol=1e-5)
    assert two["resumed"] == two["full"][3:]


def test_a_batch_where_nothing_was_chosen_masks_its_first_maskable_token():
    src, batch = _synthetic_batch(batch=1, seq=16)
    masker = DeviceMasker(MASK_ID, src.replacement_probs, 1e-6, "none", CPU)
    ids, special = batch.input_ids_unpad, batch.special_tokens_mask_unpad
    out = masker({"input_ids": ids}, special, 3)
    first = int((~special).nonzero()[0])
    assert out["masked_positions"].tolist() == [first]
    assert out["mlm_labels"].tolist() == [int(ids[first])]
    assert int(out["input_ids"][first]) == MASK_ID and int((out["input_ids"] != ids).sum()) == 1
