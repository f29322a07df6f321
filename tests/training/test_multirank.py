"""2 gloo ranks with ZeRO 1, 2 and 3 give the loss curve of 1 rank with the same global batch (fp32 and bf16), and a
run resumed from a mid-run checkpoint continues with exactly the losses of the uninterrupted run. The ZeRO-3
checkpoint then consolidates to the same fp32 weights as the 1-rank run, and exports to Hugging Face format."""
from __future__ import annotations

import json

import pytest
import torch

from tests.training.conftest import run_worker

FP32_ATOL = 1e-5  # measured 2.4e-7 (losses ~6.9): summation order only
BF16_ATOL = 2e-3  # measured 4.6e-4: bf16 weights/activations, 2-rank reduction order (7e-3 while ZeRO 0 kept DeepSpeed's init step)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    one = tmp_path_factory.mktemp("one_rank")
    two = tmp_path_factory.mktemp("two_ranks")
    run_worker("equal", one, "0", "fp32,bf16")
    run_worker("equal", two, "1,2,3", "fp32,bf16", ranks=2, timeout=400)
    return one, two, json.loads((one / "results.json").read_text()), json.loads((two / "results.json").read_text())


@pytest.mark.parametrize("stage", [1, 2, 3])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_two_ranks_match_one_rank(runs, stage, precision):
    _, _, one, two = runs
    ref, got = one[f"z0_{precision}"]["full"], two[f"z{stage}_{precision}"]["full"]
    assert len(ref) == len(got) == 6
    atol = FP32_ATOL if precision == "fp32" else BF16_ATOL
    assert max(abs(a - b) for a, b in zip(ref, got)) < atol, (ref, got)


@pytest.mark.parametrize("name", ["z0_fp32", "z0_bf16", "z1_fp32", "z1_bf16", "z2_fp32", "z2_bf16", "z3_fp32",
                                  "z3_bf16"])
def test_resume_continues_identically(runs, name):
    _, _, one, two = runs
    result = (one if name.startswith("z0") else two)[name]
    assert result["resumed"] == result["full"][3:]  # exact: same seeds, RNG and data position restored


def test_zero3_checkpoint_consolidates_and_exports(runs, tmp_path):
    from bertforge.training.weights import export_checkpoint, export_fp32, load_model_from_checkpoint

    one, two, _, _ = runs
    z3 = two / "z3_fp32" / "full"
    z0 = one / "z0_fp32" / "full"
    out = export_fp32(z3, tmp_path / "weights.safetensors")
    from safetensors.torch import load_file

    consolidated = load_file(str(out))
    reference = load_model_from_checkpoint(z0).state_dict()
    assert set(consolidated) == set(reference) - {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    for key, value in consolidated.items():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, reference[key], atol=2e-5, rtol=1e-4, msg=key)

    hf_dir = export_checkpoint(z3, tmp_path / "hf")
    transformers = pytest.importorskip("transformers")
    hf_model, info = transformers.BertForPreTraining.from_pretrained(str(hf_dir), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ours = load_model_from_checkpoint(z3).eval()
    ids = torch.randint(5, 512, (2, 11))
    with torch.no_grad():
        ref = hf_model.eval()(input_ids=ids)
        got = ours(input_ids=ids)
    torch.testing.assert_close(got.mlm_logits, ref.prediction_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.nsp_logits, ref.seq_relationship_logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("ranks", [1, 2])
def test_logging_window_averages_the_steps_it_covers(tmp_path, ranks):
    """Steps between logging lines read nothing from the device: their statistics accumulate where they are made and
    are reduced over ranks at the logging step. A 3-step line is the mean of the three 1-step lines."""
    run_worker("window", tmp_path, ranks=ranks, timeout=400)
    res = json.loads((tmp_path / "window.json").read_text())
    every1, every3 = res["1"], res["3"]
    assert [x["step"] for x in every1] == [1, 2, 3, 4, 5, 6] and [x["step"] for x in every3] == [3, 6]
    for k, line in enumerate(every3):
        covered = every1[3 * k:3 * k + 3]
        for key in ("loss", "mlm_loss", "nsp_loss", "nsp_acc"):
            assert abs(line[key] - sum(x[key] for x in covered) / 3) < 1e-5, (key, line, covered)
        assert line["tokens_per_s"] > 0 and 0 <= line["data_wait_frac"] < 1


@pytest.mark.parametrize("ranks", [1, 2])
def test_a_resume_inside_a_log_window_writes_the_uninterrupted_runs_line(tmp_path, ranks):
    """A checkpoint taken inside a logging window (step 3 of 1-4) carries the window's reduced sums in meta.json:
    the resumed run's first line (step 4) averages steps 1-4 like the uninterrupted run's (float64 sums: equal to
    the bit on one rank, within summation order on two). A checkpoint without them (older) resumes as before: its
    step-4 line covers step 4 only."""
    run_worker("resume_window", tmp_path, ranks=ranks, timeout=400)
    res = json.loads((tmp_path / "resume_window.json").read_text())
    full, resumed, old = res["full"], res["resumed"], res["old"]
    assert [x["step"] for x in full] == [x["step"] for x in resumed] == [x["step"] for x in old] == [4, 6]
    for key in ("loss", "mlm_loss", "mlm_acc", "nsp_loss", "nsp_acc"):
        assert [x[key] for x in resumed] == pytest.approx([x[key] for x in full], rel=1e-12, abs=0), key
    saved = res["saved_window"]  # steps 1-3: 4 micro batches each (global 8 / micro 2)
    assert saved["micro_batches"] == 12 and saved["micro_batches_per_step"] == 4
    assert old[0]["loss"] != full[0]["loss"] and old[1]["loss"] == full[1]["loss"]
    assert abs((saved["sums"][0] + 4 * old[0]["loss"]) / 16 - full[0]["loss"]) < 1e-12


def test_a_carried_log_window_keeps_each_steps_weight_when_micro_batches_per_step_change():
    """Saved at 4 micro batches per step (3 steps), resumed at 8: the loss sums and micro_batches double, counts
    of tokens stay, so the window's mean loss is unchanged and a new step weighs as much as each old one."""
    from bertforge.training.trainer import LogWindow

    state = {"sums": [12.0, 9.0, 3.0, 50.0, 7.0], "mlm_count": 100, "nsp_count": 24, "micro_batches": 12,
             "micro_batches_per_step": 4}
    w = LogWindow.from_state(state, torch.device("cpu"), per_step=8)
    assert w.sums.tolist() == [24.0, 18.0, 6.0, 50.0, 7.0] and w.micro_batches == 24
    assert (w.mlm_count, w.nsp_count) == (100, 24)
    assert w.reduce(torch.device("cpu"))["loss"] == 1.0
    with pytest.raises(ValueError):
        LogWindow.from_state({**state, "sums": [1.0]}, torch.device("cpu"), per_step=4)
