"""Compile every Triton kernel of bias_gelu, layer_norm, mlm_loss, masking and lamb for an H100 (sm_90) without a
GPU: the real compiler (typing, loop-carried values, constexpr branches, PTX) catches what the interpreter lets
through. Runs in a subprocess because this process imported the kernels under TRITON_INTERPRET=1."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = r'''
import triton, triton.language as tl
from triton.compiler import ASTSource
from triton.backends.compiler import GPUTarget
from kernels import bias_gelu as bg, layer_norm as ln, mlm_loss as ml, masking as mk, lamb as lb
bf, f32, i64 = "*bf16", "*fp32", "*i64"
SPECS = [
    (bg._bias_gelu_fwd_kernel, dict(X_ptr=bf, B_ptr=f32, Y_ptr=bf, n_rows="i32", n_cols="i32"),
     dict(APPROX_TANH=True, BLOCK_M=4, BLOCK_N=1024)),
    (bg._bias_gelu_bwd_kernel, dict(DY_ptr=bf, X_ptr=bf, B_ptr=bf, DX_ptr=bf, DB_part_ptr=f32, n_rows="i32",
     n_cols="i32"), dict(APPROX_TANH=False, BLOCK_M=4, BLOCK_N=1024)),
    (ln._bias_dropout_add_ln_fwd_kernel, dict(X_ptr=bf, BIAS_ptr=bf, RES_ptr=bf, W_ptr=f32, LNB_ptr=f32, Y_ptr=bf,
     S_ptr=bf, MEAN_ptr=f32, RSTD_ptr=f32, n_rows="i32", n_cols="i32", eps="fp32", p="fp32", seed="i64"),
     dict(HAS_DROPOUT=True, STORE_SUM=True, BLOCK_M=4, BLOCK_H=1024)),
    (ln._bias_dropout_add_ln_bwd_kernel, dict(DY_ptr=bf, S_ptr=bf, W_ptr=f32, MEAN_ptr=f32, RSTD_ptr=f32, DX_ptr=bf,
     DRES_ptr=bf, DW_part_ptr=f32, DLNB_part_ptr=f32, DBIAS_part_ptr=f32, n_rows="i32", n_cols="i32", p="fp32",
     seed="i32"), dict(HAS_DROPOUT=True, BLOCK_M=4, BLOCK_H=1024)),
    (ln._dropout_mask_kernel, dict(M_ptr="*u8", n="i32", p="fp32", seed="i32"), dict(BLOCK=4096)),
    (ml._mlm_ce_kernel, dict(LOGITS_ptr=bf, LABELS_ptr=i64, N_VALID_ptr=i64, LOSS_ptr=f32, PRED_ptr=i64, V="i32"),
     dict(IGNORE=-100, COMPUTE_GRAD=True, BLOCK_V=4096)),
    *[(mk._mlm_mask_kernel, dict(IDS_ptr=i64, SPECIAL_ptr="*u8", CDF_ptr=f32, OUT_ptr=i64, LABELS_ptr=i64,
       COUNTS_ptr="*i32", n="i32", seed="i64", offset="i32", mask_prob="fp32", replace_prob="fp32",
       keep_threshold="fp32", mask_token_id="i32", vocab_size="i32"),
       dict(IGNORE=-100, UNIGRAM=u, SEARCH_STEPS=15, BLOCK=2048)) for u in (False, True)],
    (mk._mlm_positions_kernel, dict(SPECIAL_ptr="*u8", STARTS_ptr=i64, POS_ptr=i64, n="i32", seed="i32",
     offset="i32", mask_prob="fp32"), dict(BLOCK=2048)),
    (mk._philox_uniforms_kernel, dict(U_ptr=f32, n="i32", seed="i32", offset="i32"), dict(BLOCK=2048)),
    (lb._lamb_phase1_kernel, dict(CHUNK_TENSOR_ptr="*i32", CHUNK_START_ptr=i64, NUMEL_ptr=i64, P_ADDR_ptr=i64,
     G_ADDR_ptr=i64, M_ADDR_ptr=i64, V_ADDR_ptr=i64, PART_ptr=f32, beta1="fp32", beta2="fp32", eps="fp32",
     weight_decay="fp32", bc1="fp32", bc2="fp32"), dict(G_DTYPE=tl.bfloat16, BLOCK=4096)),
    (lb._lamb_phase2_kernel, dict(CHUNK_TENSOR_ptr="*i32", CHUNK_START_ptr=i64, NUMEL_ptr=i64, P_ADDR_ptr=i64,
     M_ADDR_ptr=i64, V_ADDR_ptr=i64, NORMSQ_ptr=f32, lr="fp32", eps="fp32", weight_decay="fp32", bc1="fp32",
     bc2="fp32", max_trust_ratio="fp32"), dict(CLAMP=True, BLOCK=4096)),
]
for kernel, types, consts in SPECS:
    sig = {n: "constexpr" if n in consts else types[n] for n in kernel.arg_names}
    cst = {(i,): consts[n] for i, n in enumerate(kernel.arg_names) if n in consts}
    triton.compile(ASTSource(fn=kernel, signature=sig, constexprs=cst), target=GPUTarget("cuda", 90, 32),
                   options={"num_warps": 8})
print("compiled", len(SPECS))
'''


def test_all_kernels_compile_for_sm90():
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-c", DRIVER], cwd=root, env={**env, "PYTHONPATH": str(root)},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith("compiled")
