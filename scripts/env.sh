# Sourced by scripts/quickstart.sh, scripts/test.sh and .ci/run: creates (once) and activates the project's virtual
# environment in .venv with exactly the pinned package set (requirements/lock-cpu.txt; on a machine where nvidia-smi
# sees a GPU, the CUDA torch of requirements/lock-gpu.txt instead of the CPU build), then bertforge itself (editable,
# which compiles the C++ extension with g++). The venv is rebuilt when requirements/, pyproject.toml or setup.py
# change, or when BERTFORGE_FRESH_VENV=1. After every set-up the installed set is compared with the pins.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BERTFORGE_VENV:-$ROOT/.venv}"
export BERTFORGE_CACHE="${BERTFORGE_CACHE:-$HOME/.cache/bertforge}"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$BERTFORGE_CACHE/torch_extensions}"  # DeepSpeed JIT ops
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
. "$ROOT/scripts/install.sh"
KIND=cpu
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    KIND=gpu
fi
STAMP="$VENV/.bertforge-installed"
want="$KIND-$(cat "$ROOT"/requirements/* "$ROOT/pyproject.toml" "$ROOT/setup.py" | sha1sum | cut -c1-12)"
if [ "${BERTFORGE_FRESH_VENV:-0}" = 1 ] || [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
    echo "== bertforge: setting up $VENV ($KIND, pinned set requirements/$(basename "$(lock_files "$KIND")"))" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    # shellcheck disable=SC1091
    . "$VENV/bin/activate"
    install_set "$KIND" locked
    check_set "$KIND"
    echo "$want" > "$STAMP"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
