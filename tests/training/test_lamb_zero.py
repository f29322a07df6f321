"""LAMB under ZeRO: 2 gloo ranks at ZeRO 1, 2 and 3 follow the loss curve of 1 rank at ZeRO 0 (unsharded LAMB) over
20 fp32 steps, because the trust ratios are taken per parameter over the flat partitions and ranks; the same run with
the partitions left unregistered (one trust ratio per partition) does not."""
from __future__ import annotations

import json

import pytest

from tests.training.conftest import run_worker

FP32_ATOL = 2e-6  # measured 3.6e-7 (losses ~6.9): summation order of the norms and gradients only
NAIVE_MIN = 1e-3  # measured 2.9e-2 with one trust ratio per partition


@pytest.fixture(scope="module")
def curves(tmp_path_factory):
    one, two = tmp_path_factory.mktemp("lamb_one"), tmp_path_factory.mktemp("lamb_two")
    run_worker("lamb", one, "0", timeout=300)
    run_worker("lamb", two, "1,2,3,2naive", ranks=2, timeout=600)
    return json.loads((one / "lamb.json").read_text())["0"], json.loads((two / "lamb.json").read_text())


@pytest.mark.parametrize("stage", ["1", "2", "3"])
def test_two_rank_zero_lamb_matches_one_rank_unsharded(curves, stage):
    ref, got = curves[0], curves[1][stage]
    assert len(ref) == len(got) == 20
    assert max(abs(a - b) for a, b in zip(ref, got)) < FP32_ATOL, (ref, got)
    assert ref[0] - min(ref) > 0.05  # the weights moved: the curve is not flat


def test_partition_wide_trust_ratio_is_detected(curves):
    ref, naive = curves[0], curves[1]["2naive"]
    assert max(abs(a - b) for a, b in zip(ref, naive)) > NAIVE_MIN
