#!/usr/bin/env bash
# One short `bertforge pretrain` on the GPU machine for benchmarks/gpu_check.sh (the `loop` step), then its last
# train metrics line (samples/s, tokens/s, the loader-wait share data_wait_frac, MFU, loss) and the torch.profiler
# summary of steps 21-30 (device idle share between and inside steps, top ops).
# Usage: bash benchmarks/gpu_check_loop.sh NAME [pretrain flags...]   (writes $OUT/NAME/)
# Needs deepspeed (installed from a carried .whl/ into /tmp/site when missing) and the prepared dataset in
# $LOOP_DATA/data + $LOOP_DATA/tok (default runs/quickstart, from scripts/gpu_carry.sh). LOOP_PRESET, LOOP_BATCH,
# LOOP_STEPS, LOOP_PRECISION, LOOP_KERNELS override the BERT-base / 256 / 60 / bf16 / triton defaults (a CPU dry run:
# LOOP_PRESET=tiny LOOP_BATCH=32 LOOP_STEPS=20 LOOP_PRECISION=fp32 LOOP_KERNELS=none).
set -uo pipefail
cd "$(dirname "$0")/.."
name=$1; shift
OUT="${OUT:-benchmarks/results/gpu}"
LOOP_DATA="${LOOP_DATA:-runs/quickstart}"
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
if ! python3 -c "import deepspeed" 2>/dev/null; then
    [ -d .whl ] || { echo "loop: no deepspeed and no .whl/ (run scripts/gpu_carry.sh and carry .whl)"; exit 3; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 3
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
[ -d "$LOOP_DATA/data" ] || { echo "loop: $LOOP_DATA/data missing (carry runs/quickstart/data and tok)"; exit 3; }
rm -rf "${OUT:?}/$name"
python3 -m engine.cli pretrain --data "$LOOP_DATA/data" --tokenizer "$LOOP_DATA/tok" --output-dir "$OUT/$name" \
    --preset "${LOOP_PRESET:-bert-base}" --max-seq-length 128 --micro-batch "${LOOP_BATCH:-256}" \
    --global-batch "${LOOP_BATCH:-256}" --steps "${LOOP_STEPS:-60}" --lr 1e-4 --warmup-steps 10 \
    --precision "${LOOP_PRECISION:-bf16}" --kernels "${LOOP_KERNELS:-triton}" --unpadded --eval-every 0 \
    --eval-batches 2 --save-every 0 --log-every 20 --no-progress --no-export-hf --profile-steps 10 "$@" || exit $?
python3 - "$OUT/$name/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(x) for x in open(sys.argv[1]) if '"train"' in x]
r = rows[-1]  # the last window: warm-up (autotune, allocator) falls in the first
mfu = r.get("mfu")
print(f"step {r['step']}: {r['samples_per_s']:.0f} seq/s, {r['tokens_per_s']:.0f} tok/s, "
      f"data_wait_frac {r['data_wait_frac']:.4f}, mfu {mfu if mfu is not None else float('nan'):.3f}, "
      f"loss {r['loss']:.3f}")
p = json.load(open(sys.argv[1].replace("metrics.jsonl", "profile.json")))  # steps 21-30, torch.profiler
idle = p["device_idle_frac"]
print(f"profiled {p['steps']} steps: {p['step_s'] * 1e3:.1f} ms/step, device idle "
      f"{idle if idle is not None else float('nan'):.1%} (profiler overhead included: pessimistic); top ops: "
      + ", ".join(f"{o['name'][:40]}" for o in p["top_ops"][:5]))
PY
