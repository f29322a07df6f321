#!/usr/bin/env bash
# The kernels on triton 3.6.0, the Triton of torch 2.11's CUDA builds (the lent GPU machine's), next to the 3.9.0 the
# main environment pins: a side environment (.venv-triton36, scripts/triton36_venv.sh: the pinned set
# requirements/lock-triton36.txt, torch 2.13.0 CPU, triton 3.6.0, numpy < 2.3, the device's other packages) runs
#   1. every kernel test under TRITON_INTERPRET=1 (3.6's interpreter converts 1-element arrays with int(), which
#      numpy >= 2.3 refuses; numpy 2.2 only warns, hence the pin), and
#   2. the sm_90 ahead-of-time compile of every kernel at its default configs (python -m bertforge.kernels.compile_check
#      --quick; without --quick: every autotune config, ~3 min).
# Called by .ci/run after the test suite. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/scripts/triton36_venv.sh"  # sets VENV36 (created once; rebuilt when the pins change)
VENV="$VENV36"
cd "$ROOT"
# the installed import names (bertforge, bertforge.kernels) laid out from the source folders, no install needed
TREE="$(mktemp -d)"
trap 'rm -rf "$TREE"' EXIT
"$VENV/bin/python" "$ROOT/scripts/import_tree.py" "$TREE"
"$VENV/bin/python" -c "import torch, triton; print('triton', triton.__version__, 'torch', torch.__version__)"
# tests/kernels needs only torch, triton, numpy and the import tree on the path (no DeepSpeed, no C++ extension)
env PYTHONPATH="$TREE:$ROOT" TRITON_INTERPRET=1 "$VENV/bin/python" -m pytest tests/kernels -q -p no:cacheprovider \
    -W ignore::DeprecationWarning --ignore=tests/kernels/test_compile_sm90.py "$@"
env -u TRITON_INTERPRET PYTHONPATH="$TREE" TRITON_DEFAULT_FP_FUSION=1 "$VENV/bin/python" -m bertforge.kernels.compile_check --quick
