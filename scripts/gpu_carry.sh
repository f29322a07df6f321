#!/usr/bin/env bash
# Prepares, on this (CPU) machine, what benchmarks/gpu_check.sh's `loop` step needs on the lent GPU machine, which
# has no DeepSpeed and cannot download: .whl/ (DeepSpeed 0.19.8 built as a pure-Python wheel + its pure or cp312
# dependencies, ~6 MB) and runs/quickstart/{tok,data} (the 8,192-word WordPiece vocabulary and the prepared Wikipedia
# dataset, ~5 MB; the same steps as scripts/quickstart.sh). Then call the device tool with
#   carry: [".whl", "runs/quickstart/data", "runs/quickstart/tok"]
# (all three are git-ignored: the data is never committed).
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
