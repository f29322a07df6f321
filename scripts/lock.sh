#!/usr/bin/env bash
# Refreshes the pins: resolves requirements/<kind>.in anew in a throw-away venv (empty pip cache, same install order
# as env.sh) and writes the whole installed set, build tools included, to requirements/lock-<kind>.txt.
#   bash scripts/lock.sh            # cpu and triton36 (on a CPU machine with registry access)
#   bash scripts/lock.sh gpu        # on a GPU machine with registry access: torch/triton + CUDA libraries
# Review the diff of requirements/lock-*.txt, run both README commands in a fresh clone, then commit.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/scripts/install.sh"
kinds=("$@")
[ ${#kinds[@]} -gt 0 ] || kinds=(cpu triton36)
for kind in "${kinds[@]}"; do
    if [ "$kind" = gpu ] && ! (command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1); then
        echo "lock.sh: 'gpu' must run on a machine where nvidia-smi sees a GPU (the CUDA torch stack is not" \
             "resolvable here); refresh it there and commit requirements/lock-gpu.txt" >&2
        exit 2
    fi
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    python3 -m venv "$tmp/venv"
    # shellcheck disable=SC1091
    . "$tmp/venv/bin/activate"
    export PIP_NO_CACHE_DIR=1 PIP_CACHE_DIR="$tmp/pip-cache"
    echo "== lock.sh: resolving $kind" >&2
    install_set "$kind" fresh
    out="$ROOT/requirements/lock-$kind.txt"
    {
        echo "# The pinned set of the '$kind' environment: every package installed, build tools included."
        echo "# Written by \`bash scripts/lock.sh $kind\` on $(date -u +%Y-%m-%d) ($(python -V), $(uname -m));"
        echo "# scripts/env.sh installs with it as constraints and fails when the installed set differs."
        if [ "$kind" = gpu ]; then
            echo "# Only torch, triton and torch's CUDA libraries; every other package comes from lock-cpu.txt."
            python "$ROOT/scripts/pins.py" freeze | grep -E '^(torch|triton|nvidia-.*|cuda-.*)=='
        else
            python "$ROOT/scripts/pins.py" freeze
        fi
    } > "$out.tmp"
    mv "$out.tmp" "$out"
    deactivate
    rm -rf "$tmp"
    trap - EXIT
    echo "== lock.sh: wrote $out ($(grep -cv '^#' "$out") packages)" >&2
done
