"""Compile every Triton kernel for an H100 (sm_90) without a GPU (kernels/compile_check.py): the real compiler
(dot shapes and dtypes, loop-carried values, constexpr branches, PTX) catches what the interpreter lets through.
Runs in a subprocess because this process imported the kernels under TRITON_INTERPRET=1. Compiled with the launcher's
specialisation; CI compiles every autotune config of the attention kernels (the full and the query-rows ones) at
d = 64 (BERT's head size) and fails on any register spill (`python -m bertforge.kernels.compile_check --spills` does
d = 32, 64, 128)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _compile_check(*args: str) -> subprocess.CompletedProcess:
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_DEFAULT_FP_FUSION="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "bertforge.kernels.compile_check", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_epilogue_loss_masking_lamb_kernels_compile_for_sm90():
    res = _compile_check("--only", "epilogues", "--spills")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "epilogues: compiled 17 kernel variants" in res.stdout and "STACK 0" in res.stdout


def test_attention_kernels_compile_for_sm90_without_register_spills():
    """Every GPU autotune config of every attention kernel (forward, fused / split / atomic-dq backward) at d = 64 in
    the variants the GPU launches: training's (dropout with per-sample row ids, padded and unpadded, bf16 and fp16)
    and evaluation's (padded, no dropout): no stack frame, so no config autotune may pick spills."""
    res = _compile_check("--only", "attention", "--spills", "--head-dim", "64")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "attention: compiled 80 kernel variants" in res.stdout and "SPILL" not in res.stdout


def test_query_rows_attention_kernels_compile_for_sm90_without_register_spills():
    """kernels/attention_rows.py's forward, dq and dk/dv kernels at every GPU autotune config, d = 64, training's
    variants (dropout with per-sample row ids, bf16 and fp16) and evaluation's (bf16, no dropout): no stack frame."""
    res = _compile_check("--only", "attention_rows", "--spills", "--head-dim", "64")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "attention_rows: compiled 27 kernel variants" in res.stdout and "SPILL" not in res.stdout


def test_compile_check_refuses_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "bertforge.kernels.compile_check"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode != 0 and "unset TRITON_INTERPRET" in res.stderr
