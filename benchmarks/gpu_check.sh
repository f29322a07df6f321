#!/usr/bin/env bash
# One prepared run on the lent GPU machine (see ../shared/GPU.md): builds the C++ extension, runs every kernel's bf16
# correctness check against its reference, the kernel benchmarks, the model-level kernels-on/off equality test, and
# (unless GPU_CHECK_SKIP_THROUGHPUT=1) the end-to-end throughput benchmark vs Hugging Face. Everything is written under
# ${OUT:-benchmarks/results/gpu}; one summary table is printed at the end.
# Usage on the device tool:  bash benchmarks/gpu_check.sh          (budget: < 5 min kernels, < 4 min throughput)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD:${PYTHONPATH:-}" TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" \
    | tee "$OUT/versions.txt"
# the pybind11 extension (numpy only): built in place, no torch linkage
python3 setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1 || { echo "extension build failed"; tail "$OUT/build.log"; }

status=0
step() {  # step NAME TIMEOUT CMD...: runs CMD with a time limit, logs it, records pass/fail
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    printf '%-22s rc=%-3s %4ss\n' "$name" "$rc" "$((SECONDS - t0))" >> "$OUT/summary.txt"
    [ "$rc" -eq 0 ] || status=1
}
: > "$OUT/summary.txt"
step attention 150 python3 benchmarks/gpu_check_attention.py --out "$OUT"
step kernels 120 python3 benchmarks/gpu_check_kernels.py --out "$OUT"
step model_switch 60 python3 -m pytest -q -p no:cacheprovider tests/engine/test_model_kernels_switch.py
if [ "${GPU_CHECK_SKIP_THROUGHPUT:-0}" != 1 ]; then
    step throughput 240 python3 benchmarks/train_throughput.py --shapes base-128,large-128,base-512 \
        --variants hf,hf-compile,ours,ours-padded --batch base-128=256,large-128=128,base-512=64 \
        --steps 10 --warmup 3 --out "$OUT/train_throughput.json"
fi

echo; echo "=== attention ==="; tail -n 25 "$OUT/attention.log"
echo; echo "=== kernels ===";   tail -n 30 "$OUT/kernels.log"
echo; echo "=== model kernels on/off ==="; tail -n 3 "$OUT/model_switch.log"
[ -f "$OUT/throughput.log" ] && { echo; echo "=== throughput ==="; tail -n 16 "$OUT/throughput.log"; }
echo; echo "=== summary ==="; cat "$OUT/summary.txt"
exit $status
