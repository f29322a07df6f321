#!/usr/bin/env bash
# The prepared runs for the lent GPU machine (see ../shared/GPU.md; torch 2.11 / triton 3.6 there, no DeepSpeed).
#   bash benchmarks/gpu_check.sh kernels      (< 5 min) builds the C++ extension, runs every kernel's bf16 correctness
#                                             check against its reference, the kernel benchmarks vs torch/SDPA, and
#                                             the model-level kernels-on/off equality test            (issue 6)
#   bash benchmarks/gpu_check.sh throughput   (< 8 min) end-to-end steps vs Hugging Face eager/compiled: BERT-base
#                                             s128 with every ablation, compiled, and the largest batch that fits,
#                                             BERT-large s128, BERT-base s512 with the Wikipedia lengths; then `loop`
#   bash benchmarks/gpu_check.sh loop         (< 2 min) `bertforge pretrain` itself (DeepSpeed, real corpus, BERT-base
#                                             bf16 unpadded + kernels, device masking + prefetch): tokens/s and the
#                                             loader-wait share data_wait_frac (LOOP_COMPARE=1: also host masking
#                                             without prefetch)
#   bash benchmarks/gpu_check.sh all          everything (over the device tool's 10-minute call limit: use two calls,
#                                             the second within the machine's idle release of 30 s)
# `loop` needs what `bash scripts/gpu_carry.sh` prepares here, carried to the device: carry [".whl",
# "runs/quickstart/data", "runs/quickstart/tok"] (DeepSpeed's pure-Python wheel + deps, the prepared Wikipedia
# dataset and its tokenizer; ~11 MB). Without them the loop step reports what is missing and fails.
# Everything goes under ${OUT:-benchmarks/results/gpu}; a summary table is printed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
case "$what" in kernels|throughput|loop|all) ;; *) echo "usage: $0 kernels|throughput|loop|all" >&2; exit 2 ;; esac
OUT="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD:${PYTHONPATH:-}" TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" \
    | tee "$OUT/versions.txt"
# the pybind11 extension (numpy only): built in place, no torch linkage
[ -n "$(ls engine/_csrc*.so 2>/dev/null)" ] || python3 setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1 \
    || { echo "extension build failed"; tail "$OUT/build.log"; }

status=0
step() {  # step NAME TIMEOUT CMD...: runs CMD with a time limit, logs it, records pass/fail
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    printf '%-22s rc=%-3s %4ss\n' "$name" "$rc" "$((SECONDS - t0))" | tee -a "$OUT/summary.txt"
    [ "$rc" -eq 0 ] || status=1
}
TT="python3 benchmarks/train_throughput.py --steps 10 --warmup 3"
if [ "$what" = kernels ] || [ "$what" = all ]; then
    step attention 150 python3 benchmarks/gpu_check_attention.py --out "$OUT"
    step kernels 100 python3 benchmarks/gpu_check_kernels.py --out "$OUT"
    step model_switch 60 python3 -m pytest -q -p no:cacheprovider tests/engine/test_model_kernels_switch.py
fi
if [ "$what" = throughput ] || [ "$what" = all ]; then
    step tt_base128 110 $TT --shapes base-128 --batch 256 --variants ablation --out "$OUT/tt_base128.json"
    step tt_base128_compile 110 $TT --shapes base-128 --batch 256 --variants hf,hf-compile,ours-compile \
        --out "$OUT/tt_base128_compile.json"
    step tt_large128 50 $TT --shapes large-128 --batch 128 --variants hf,ours --out "$OUT/tt_large128.json"
    step tt_base512_wiki 50 $TT --shapes base-512 --batch 64 --lengths wiki --variants hf,ours \
        --out "$OUT/tt_base512_wiki.json"
    step tt_max_batch 60 $TT --shapes base-128 --batch 256 --variants "" --max-batch --out "$OUT/tt_max_batch.json"
fi
if [ "$what" != kernels ]; then  # the loop: device masking + prefetch (LOOP_COMPARE=1 adds host masking, no prefetch)
    step loop_device 75 bash benchmarks/gpu_check_loop.sh loop_device --masking device --prefetch 2
    [ "${LOOP_COMPARE:-0}" = 1 ] && step loop_host 75 bash benchmarks/gpu_check_loop.sh loop_host --masking host \
        --prefetch 0
fi

for log in attention kernels; do
    [ -f "$OUT/$log.log" ] && { echo; echo "=== $log ==="; tail -n 30 "$OUT/$log.log"; }
done
[ -f "$OUT/model_switch.log" ] && { echo; echo "=== model kernels on/off ==="; tail -n 3 "$OUT/model_switch.log"; }
for log in tt_base128 tt_base128_compile tt_large128 tt_base512_wiki tt_max_batch; do
    [ -f "$OUT/$log.log" ] && { echo; echo "=== $log ==="; tail -n 14 "$OUT/$log.log"; }
done
for log in loop_device loop_host; do
    [ -f "$OUT/$log.log" ] && { echo; echo "=== $log ==="; tail -n 3 "$OUT/$log.log"; }
done
echo; echo "=== summary ==="; cat "$OUT/summary.txt"
exit $status
