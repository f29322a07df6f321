#!/usr/bin/env bash
# The package's declared dependencies are complete: build the wheel, install it into a FRESH venv with only what
# pyproject.toml declares (no requirements files, no test extras, no --system-site-packages), pinned to
# requirements/lock-cpu.txt as constraints so the check is deterministic, then run from outside the source tree:
# tokenizer train, prepare, a 2-step pretrain and a finetune, on a corpus made from the repository's shipped
# fixtures (tests/fixtures/*.txt). Order of installs: the build tools and torch first (torch is a declared
# dependency; deepspeed's setup.py imports it, so deepspeed builds without isolation after it), then the wheel.
# Called by .ci/run; needs the package registries. BERTFORGE_KEEP_WHEEL_VENV=1 keeps the work folder.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d)"
[ "${BERTFORGE_KEEP_WHEEL_VENV:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
start=$SECONDS
log="$WORK/pip.log"
step() { echo "== check_wheel: $* ($((SECONDS - start)) s)" >&2; }
pipq() {  # quiet pip into the fresh venv; one line and the log's tail on failure
    if ! "$WORK/venv/bin/python" -m pip install --no-input "$@" >>"$log" 2>&1; then
        echo "check_wheel: pip install $* failed; log: $log" >&2
        tail -20 "$log" >&2
        exit 1
    fi
}

step "building the wheel"
BUILD_PY="$ROOT/.venv/bin/python"
[ -x "$BUILD_PY" ] || BUILD_PY="$PY"
"$BUILD_PY" -m pip wheel --no-deps --no-build-isolation -q -w "$WORK/dist" "$ROOT" >>"$log" 2>&1 ||
    { echo "check_wheel: building the wheel failed; log: $log" >&2; tail -20 "$log" >&2; exit 1; }
WHEEL="$(ls "$WORK"/dist/bertforge-*.whl)"

step "fresh venv, declared dependencies only"
"$PY" -m venv "$WORK/venv"
CONS="$WORK/constraints.txt"
grep -vE '^(triton)==' "$ROOT/requirements/lock-cpu.txt" > "$CONS"  # triton: an extra, not installed here
pipq -c "$CONS" setuptools wheel
pipq -c "$CONS" torch
pipq -c "$CONS" --no-build-isolation "$WHEEL"
"$WORK/venv/bin/python" -m pip freeze > "$WORK/freeze.txt"
for absent in matplotlib tensorboard transformers pytest triton; do  # extras stay out
    if grep -qi "^$absent==" "$WORK/freeze.txt"; then
        echo "check_wheel: $absent was installed although bertforge does not declare it as a dependency" >&2
        exit 1
    fi
done

step "tokenizer train, prepare, pretrain 2 steps, finetune"
cd "$WORK"  # never the source tree: the installed package is what runs
export DS_ACCELERATOR=cpu TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
# its own DeepSpeed JIT folder: the op built against this venv's torch must not replace (or lock) the shared one
export BERTFORGE_CACHE="$WORK/cache" TORCH_EXTENSIONS_DIR="$WORK/torch_extensions"
BF=("$WORK/venv/bin/python" -m bertforge.cli)
"$WORK/venv/bin/python" - "$ROOT/tests/fixtures" <<'EOF'
import pathlib, random, sys
lines = [l.strip() for f in sorted(pathlib.Path(sys.argv[1]).glob("*.txt"))
         for l in f.read_text(encoding="utf-8").splitlines() if l.strip()]
rng = random.Random(0)
docs = ["\n".join(f"{rng.choice(lines)} number {rng.randrange(100)}." for _ in range(6)) for _ in range(300)]
pathlib.Path("corpus.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
rows = ["text,label"] + [f"{rng.choice(lines).replace(',', ' ')},{'a' if k % 2 else 'b'}" for k in range(64)]
pathlib.Path("cls.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
EOF
"${BF[@]}" tokenizer train corpus.txt --out tok --vocab-size 400 >/dev/null
"${BF[@]}" prepare corpus.txt --tokenizer tok --out data --max-seq-length 64 --workers 1 --no-progress >/dev/null
"${BF[@]}" pretrain --data data --tokenizer tok --output-dir run --preset tiny --model hidden_size=32 \
    --model num_attention_heads=2 --model intermediate_size=64 --model num_hidden_layers=2 --max-seq-length 64 \
    --micro-batch 4 --global-batch 4 --steps 2 --log-every 1 --eval-every 0 --eval-samples 4 --no-progress \
    >/dev/null
"${BF[@]}" finetune classify --model run --data cls.csv --out ft --epochs 1 --global-batch 8 \
    --max-seq-length 32 --threads 1 --no-progress >/dev/null
test -f ft/summary.json && test -f run/hf/config.json
step "ok: the wheel with its declared dependencies ran every command"
