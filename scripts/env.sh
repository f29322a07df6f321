# Sourced by scripts/quickstart.sh, scripts/test.sh and .ci/run: creates (once) and activates the project's virtual
# environment in .venv, installing torch (CPU build pinned, or the CUDA default where nvidia-smi works), triton,
# deepspeed, the test tools and bertforge itself (editable, which compiles the C++ extension with g++).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BERTFORGE_VENV:-$ROOT/.venv}"
export BERTFORGE_CACHE="${BERTFORGE_CACHE:-$HOME/.cache/bertforge}"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$BERTFORGE_CACHE/torch_extensions}"  # DeepSpeed JIT ops
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
STAMP="$VENV/.bertforge-installed"
want="$(cat "$ROOT/requirements-cpu.txt" "$ROOT/requirements-test.txt" "$ROOT/pyproject.toml" "$ROOT/setup.py" | sha1sum | cut -c1-12)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
    echo "== bertforge: setting up $VENV" >&2
    python3 -m venv "$VENV"
    # shellcheck disable=SC1091
    . "$VENV/bin/activate"
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        # GPU machine: the registry's default torch is a CUDA build and brings its matching triton.
        python -m pip install -q torch triton
        grep -vE '^(torch|triton)==' "$ROOT/requirements-cpu.txt" | python -m pip install -q -r /dev/stdin
    else
        python -m pip install -q -r "$ROOT/requirements-cpu.txt"
    fi
    python -m pip install -q -r "$ROOT/requirements-test.txt"
    python -m pip install -q --no-build-isolation -e "$ROOT"
    echo "$want" > "$STAMP"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
