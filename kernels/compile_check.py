"""Ahead-of-time compile of every Triton kernel for a GPU target without a GPU (default: H100, sm_90).

The interpreter (TRITON_INTERPRET=1, how the tests run kernels on CPU) lets through what the real compiler rejects:
dot operand shapes and dtypes, loop-carried values that change type, constexpr branches, register pressure at the
GPU block sizes, PTX generation. This walks the GPU launch configurations (attention's autotune lists, the epilogue
kernels' block sizes) through `triton.compile` for the target, in bf16 and fp16 where the kernel is dtype-generic.

    python -m bertforge.kernels.compile_check [--arch 90] [--only attention|attention_rows|epilogues] [--quick]
        [--spills] [--head-dim 64] [--dropout-bits 8 --dropout-bits 24]
    (--dropout-bits default 8: the dropout variants at 8-bit thresholds, the model's default)

Each kernel is compiled with the specialisation the launcher gives it on a GPU (pointers 16-byte aligned, strides and
row lengths divisible by 16, except the arguments a kernel marks do_not_specialize), so the binary is the one the GPU
runs. --spills reads each binary's register and stack use with cuobjdump (shipped with triton) and fails on any stack
frame (registers spilled to local memory); its table is the evidence behind attention's config lists.

Run it WITHOUT TRITON_INTERPRET (the attention module picks its GPU config lists at import). Works with triton 3.6
(what torch 2.11's CUDA builds ship, the lent GPU machine's) and 3.9 (PyPI, the CPU machines'): the signature is
given as {name: type | "constexpr"} and constexprs as {(index,): value}, which both accept. Prints one line per
kernel family and exits non-zero on the first failure with the kernel, its constants and the compiler's message."""
from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

_BF, _F32, _I64 = "*bf16", "*fp32", "*i64"


_DIVISIBLE_INTS = ("n_cols",)  # row lengths that are multiples of 16 at BERT's sizes (768, 1024)


def _specialisation(fn, types: dict, consts: dict) -> dict:
    """The launcher's attributes: 16-byte-aligned pointers and divisible-by-16 strides / row lengths (BERT's shapes)
    for every argument not marked do_not_specialize."""
    skip = {fn.arg_names[i] if isinstance(i, int) else i for i in (fn.do_not_specialize or ())}
    attrs = {}
    for i, name in enumerate(fn.arg_names):
        if name in consts or name in skip:
            continue
        if types[name].startswith("*") or name.startswith("stride") or name in _DIVISIBLE_INTS:
            attrs[(i,)] = [["tt.divisibility", 16]]
    return attrs


def _compile(kernel, types: dict, consts: dict, target, num_warps: int = 8, num_stages: int = 3):
    """-> the CompiledKernel (binary in .asm["cubin"])."""
    fn = kernel.fn if isinstance(kernel, triton.runtime.Autotuner) else kernel  # a JITFunction
    missing = [n for n in fn.arg_names if n not in types and n not in consts]
    if missing:
        raise KeyError(f"{fn.__name__}: no type given for {missing}")
    sig = {n: "constexpr" if n in consts else types[n] for n in fn.arg_names}
    cst = {(i,): consts[n] for i, n in enumerate(fn.arg_names) if n in consts}
    try:
        return triton.compile(ASTSource(fn=fn, signature=sig, constexprs=cst, attrs=_specialisation(fn, types, consts)),
                              target=target, options={"num_warps": num_warps, "num_stages": num_stages})
    except Exception as exc:
        raise RuntimeError(f"{fn.__name__} with {consts} (num_warps={num_warps}, num_stages={num_stages}) failed "
                           f"to compile: {type(exc).__name__}: {str(exc)[:2000]}") from exc


def resource_usage(compiled) -> dict:
    """{'REG': registers per thread, 'STACK': bytes of stack frame (> 0: spills), 'SHARED': static shared bytes}
    of a compiled kernel, read from its cubin with cuobjdump --dump-resource-usage."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        text = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True, text=True,
                              check=True).stdout
    line = [ln for ln in text.splitlines() if "REG:" in ln][-1]
    return {k: int(v) for k, v in (item.split(":") for item in line.split()
                                   if item.split(":")[0] in ("REG", "STACK", "SHARED"))}


# ---- attention ---------------------------------------------------------------------------------------------------
def _attention_types(fn, elem: str, dq_elem: str) -> dict:
    """Argument types of an attention kernel by name: tensors of `elem`, fp32 statistics, int32 index arrays."""
    types = {}
    for name in fn.arg_names:
        if name in ("Q", "K", "V", "Out", "DO", "DK", "DV"):
            types[name] = elem
        elif name == "DQ":
            types[name] = dq_elem
        elif name in ("Lse", "Delta"):
            types[name] = _F32
        elif name in ("CuSeqlens", "SeqLens", "CuSeqlensQ", "QOrder", "QPos"):
            types[name] = "*i32"
        elif name == "Kpm":
            types[name] = "*u8"
        elif name in ("Seed", "RowIds"):
            types[name] = _I64
        elif name in ("sm_scale", "drop_scale"):
            types[name] = "fp32"
        else:  # strides, counts, DROP_THRESH, max_seqlen, SEQ_BUCKET
            types[name] = "i32"
    return types


def attention_specs(quick: bool = False, head_dims=(32, 64, 128), dropout_bits=(8,)):
    """(kernel, types, constexprs, num_warps, num_stages) for every GPU config of every attention kernel in the
    variants the GPU launches: training's (dropout with per-sample row ids, unpadded and padded: the most registers)
    and evaluation's (padded, no dropout), in bf16 and fp16 (training's variants; fp16 at d = 64 only, BERT's head
    size), the dropout variants once per dropout_bits. quick: each list's first config only (the one launched when
    autotuning is off)."""
    from bertforge.kernels import attention as A
    from bertforge.kernels.reference import dropout_group

    first = (lambda configs: configs[:1]) if quick else (lambda configs: configs)
    specs = []
    layouts = [*(layout for bits in dropout_bits for layout in (
                   dict(VARLEN=True, HAS_KPM=False, IS_DROPOUT=True, HAS_ROW_IDS=True,  # training, unpadded
                        DROP_GROUP=dropout_group(bits)),
                   dict(VARLEN=False, HAS_KPM=True, IS_DROPOUT=True, HAS_ROW_IDS=True,  # training, padded
                        DROP_GROUP=dropout_group(bits)))),
               dict(VARLEN=False, HAS_KPM=True, IS_DROPOUT=False, HAS_ROW_IDS=False, DROP_GROUP=16)]  # evaluation
    cfgs = A.GPU_CONFIGS
    for elem, head_dim, layout in itertools.product(("*bf16", "*fp16"), head_dims, layouts):
        if elem == "*fp16" and (head_dim != 64 or not layout["IS_DROPOUT"]):
            continue  # fp16 shares every code path with bf16: training's variants at BERT's head size
        base = dict(HEAD_DIM=head_dim, BLOCK_D=max(16, triton.next_power_of_2(head_dim)), DOT_FP32=False, **layout)
        for cfg in first(cfgs["fwd"]):
            specs.append((A._attn_fwd_kernel, _attention_types(A._attn_fwd_kernel, elem, elem), {**base, **cfg.kwargs},
                          cfg.num_warps, cfg.num_stages))
        fused_n = A.GPU_FUSED_MAX_SEQLEN[128 if head_dim > 64 else (64 if head_dim > 32 else 32)]
        for cfg in first(cfgs["bwd_fused"]):
            specs.append((A._attn_bwd_dkdv_kernel, _attention_types(A._attn_bwd_dkdv_kernel, elem, elem),
                          {**base, "DQ_MODE": 1, "BLOCK_N": fused_n, **cfg.kwargs}, cfg.num_warps, cfg.num_stages))
        for cfg, mode in itertools.product(first(cfgs["bwd_dkdv"]), (0, 2)):
            specs.append((A._attn_bwd_dkdv_kernel,
                          _attention_types(A._attn_bwd_dkdv_kernel, elem, _F32 if mode == 2 else elem),
                          {**base, "DQ_MODE": mode, **cfg.kwargs}, cfg.num_warps, cfg.num_stages))
        for cfg in first(cfgs["bwd_dq"]):
            specs.append((A._attn_bwd_dq_kernel, _attention_types(A._attn_bwd_dq_kernel, elem, elem),
                          {**base, **cfg.kwargs}, cfg.num_warps, cfg.num_stages))
        specs.append((A._attn_bwd_preprocess_kernel, _attention_types(A._attn_bwd_preprocess_kernel, elem, elem),
                      {k: base[k] for k in ("HEAD_DIM", "BLOCK_D", "VARLEN")} | {"BLOCK_M": 64}, 4, 1))
    return specs


def attention_rows_specs(quick: bool = False, head_dims=(32, 64, 128), dropout_bits=(8,)):
    """kernels/attention_rows.py's forward, dq and dk/dv kernels at every GPU config, in training's variant
    (dropout with per-sample row ids, once per dropout_bits) and evaluation's (no dropout), bf16 (+ fp16 training's
    at d = 64). quick: each list's first config only."""
    from bertforge.kernels import attention_rows as AR
    from bertforge.kernels.reference import dropout_group

    variants = [dict(IS_DROPOUT=True, HAS_ROW_IDS=True, DROP_GROUP=dropout_group(bits)) for bits in dropout_bits]
    variants.append(dict(IS_DROPOUT=False, HAS_ROW_IDS=False, DROP_GROUP=16))
    kernels = {"fwd": AR._rows_fwd_kernel, "bwd_dq": AR._rows_bwd_dq_kernel, "bwd_dkdv": AR._rows_bwd_dkdv_kernel}
    specs = []
    for elem, head_dim, variant in itertools.product(("*bf16", "*fp16"), head_dims, variants):
        if elem == "*fp16" and (head_dim != 64 or not variant["IS_DROPOUT"]):
            continue
        base = dict(HEAD_DIM=head_dim, BLOCK_D=max(16, triton.next_power_of_2(head_dim)), DOT_FP32=False, **variant)
        for kind, kernel in kernels.items():
            for cfg in AR.GPU_CONFIGS[kind][:1] if quick else AR.GPU_CONFIGS[kind]:
                specs.append((kernel, _attention_types(kernel, elem, elem), {**base, **cfg.kwargs}, cfg.num_warps,
                              cfg.num_stages))
    return specs


# ---- epilogues, loss, masking, LAMB ------------------------------------------------------------------------------
def epilogue_specs(quick: bool = False, head_dims=None, dropout_bits=(8,)):
    """The epilogue, loss, masking and LAMB kernels at BERT-base's width (h = 768: BLOCK_Q * DROP_GROUP = 1024
    columns), the dropout kernels once per dropout_bits."""
    from bertforge.kernels import bias_gelu as bg, dropout as dr, lamb as lb, layer_norm as ln, masking as mk, mlm_loss as ml
    from bertforge.kernels.reference import dropout_group

    tiles = [dict(BLOCK_M=4, BLOCK_Q=1024 // dropout_group(b), DROP_GROUP=dropout_group(b)) for b in dropout_bits]

    specs = [
        (bg._bias_gelu_fwd_kernel, dict(X_ptr=_BF, B_ptr=_F32, Y_ptr=_BF, n_rows="i32", n_cols="i32"),
         dict(APPROX_TANH=True, BLOCK_M=4, BLOCK_N=1024)),
        (bg._bias_gelu_fwd_kernel, dict(X_ptr="*fp16", B_ptr="*fp16", Y_ptr="*fp16", n_rows="i32", n_cols="i32"),
         dict(APPROX_TANH=False, BLOCK_M=4, BLOCK_N=1024)),
        (bg._bias_gelu_bwd_kernel, dict(DY_ptr=_BF, X_ptr=_BF, B_ptr=_BF, DX_ptr=_BF, DB_part_ptr=_F32,
                                        n_rows="i32", n_cols="i32"), dict(APPROX_TANH=False, BLOCK_M=4, BLOCK_N=1024)),
        *[(ln._bias_dropout_add_ln_fwd_kernel, dict(X_ptr=_BF, BIAS_ptr=_BF, RES_ptr=_BF, W_ptr=_F32, LNB_ptr=_F32,
                                                    Y_ptr=_BF, S_ptr=_BF, MEAN_ptr=_F32, RSTD_ptr=_F32, SEED_ptr=_I64,
                                                    ROW_IDS_ptr=_I64, n_rows="i32", n_cols="i32", eps="fp32",
                                                    THRESH="i32", drop_scale="fp32"),
           dict(HAS_DROPOUT=True, HAS_ROW_IDS=r, STORE_SUM=True, **t)) for r in (False, True) for t in tiles],
        *[(ln._bias_dropout_add_ln_bwd_kernel, dict(DY_ptr=_BF, S_ptr=_BF, W_ptr=_F32, MEAN_ptr=_F32, RSTD_ptr=_F32,
                                                    DX_ptr=_BF, DRES_ptr=_BF, DW_part_ptr=_F32, DLNB_part_ptr=_F32,
                                                    DBIAS_part_ptr=_F32, SEED_ptr=_I64, ROW_IDS_ptr=_I64,
                                                    n_rows="i32", n_cols="i32", THRESH="i32", drop_scale="fp32"),
           dict(HAS_DROPOUT=True, HAS_ROW_IDS=r, **t)) for r in (False, True) for t in tiles],
        *[(dr._dropout_kernel, dict(X_ptr=_BF, Y_ptr=_BF, SEED_ptr=_I64, ROW_IDS_ptr=_I64, n_rows="i32", n_cols="i32",
                                    THRESH="i32", drop_scale="fp32"),
           dict(HAS_ROW_IDS=r, **t)) for r in (False, True) for t in tiles],
        *[(ml._mlm_ce_kernel, dict(LOGITS_ptr=e, LABELS_ptr=_I64, LOSS_ptr=_F32, PRED_ptr=_I64, V="i32", stride="i32"),
           dict(IGNORE=-100, COMPUTE_GRAD=True, BLOCK_V=4096)) for e in (_BF, "*fp16")],
        *[(mk._mlm_mask_kernel, dict(IDS_ptr=_I64, SPECIAL_ptr="*u8", CDF_ptr=_F32, OUT_ptr=_I64, LABELS_ptr=_I64,
                                     COUNTS_ptr="*i32", n="i32", seed="i64", offset="i32", mlm_probability="fp32",
                                     mask_replace_prob="fp32", keep_threshold="fp32", mask_token_id="i32",
                                     vocab_size="i32"),
           dict(IGNORE=-100, UNIGRAM=u, SEARCH_STEPS=15, BLOCK=2048)) for u in (False, True)],
        (mk._mlm_positions_kernel, dict(SPECIAL_ptr="*u8", STARTS_ptr=_I64, POS_ptr=_I64, n="i32", seed="i32",
                                        offset="i32", mlm_probability="fp32"), dict(BLOCK=2048)),
        (mk._philox_uniforms_kernel, dict(U_ptr=_F32, n="i32", seed="i32", offset="i32"), dict(BLOCK=2048)),
        (lb._lamb_phase1_kernel, dict(CHUNK_TENSOR_ptr="*i32", CHUNK_START_ptr=_I64, NUMEL_ptr=_I64, P_ADDR_ptr=_I64,
                                      G_ADDR_ptr=_I64, M_ADDR_ptr=_I64, V_ADDR_ptr=_I64, PART_ptr=_F32, beta1="fp32",
                                      beta2="fp32", eps="fp32", weight_decay="fp32", bc1="fp32", bc2="fp32"),
         dict(G_DTYPE=tl.bfloat16, BLOCK=4096)),
        (lb._lamb_phase2_kernel, dict(CHUNK_TENSOR_ptr="*i32", CHUNK_START_ptr=_I64, NUMEL_ptr=_I64, P_ADDR_ptr=_I64,
                                      M_ADDR_ptr=_I64, V_ADDR_ptr=_I64, NORMSQ_ptr=_F32, lr="fp32", eps="fp32",
                                      weight_decay="fp32", bc1="fp32", bc2="fp32", max_trust_ratio="fp32"),
         dict(CLAMP=True, BLOCK=4096)),
    ]
    return [(k, t, c, 8, 3) for k, t, c in specs]


FAMILIES = {"attention": attention_specs, "attention_rows": attention_rows_specs, "epilogues": epilogue_specs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="compile every Triton kernel for a GPU target, without a GPU")
    p.add_argument("--arch", type=int, default=90, help="CUDA compute capability x10 (90 = H100/H200)")
    p.add_argument("--quick", action="store_true", help="attention: bf16, each list's first config only")
    p.add_argument("--only", choices=sorted(FAMILIES), action="append", help="kernel family (repeatable)")
    p.add_argument("--head-dim", type=int, action="append", help="attention head dims (default 32, 64, 128)")
    p.add_argument("--spills", action="store_true",
                   help="print registers / stack per kernel (cuobjdump) and fail on any register spill")
    p.add_argument("--dropout-bits", type=int, choices=(8, 24), action="append",
                   help="dropout variants at these thresholds (repeatable; default 8, the model's default)")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        p.error("unset TRITON_INTERPRET: the attention module picks its GPU configs at import")
    target = GPUTarget("cuda", args.arch, 32)
    spilled = []
    for family in args.only or sorted(FAMILIES):
        t0 = time.perf_counter()
        head_dims = tuple(args.head_dim) if args.head_dim and family.startswith("attention") else (32, 64, 128)
        specs = FAMILIES[family](args.quick, head_dims, tuple(args.dropout_bits or (8,)))
        for kernel, types, consts, warps, stages in specs:
            compiled = _compile(kernel, types, consts, target, warps, stages)
            if args.spills:
                use = resource_usage(compiled)
                shown = {k: v for k, v in consts.items() if k in ("HEAD_DIM", "VARLEN", "IS_DROPOUT", "HAS_ROW_IDS",
                                                                  "DQ_MODE", "BLOCK_M", "BLOCK_N", "BLOCK_Q",
                                                                  "DROP_GROUP")}
                name = (kernel.fn if isinstance(kernel, triton.runtime.Autotuner) else kernel).__name__
                row = f"{name} {shown} warps={warps} stages={stages}: REG {use['REG']} STACK {use['STACK']}"
                print(("SPILL " if use["STACK"] else "      ") + row, flush=True)
                if use["STACK"]:
                    spilled.append(row)
        print(f"{family}: compiled {len(specs)} kernel variants for sm_{args.arch} with triton {triton.__version__} "
              f"in {time.perf_counter() - t0:.0f} s", flush=True)
    if spilled:
        print(f"{len(spilled)} kernel variants spill registers:\n" + "\n".join(spilled), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
