#!/usr/bin/env bash
# The whole test suite, on CPU (Triton kernels under TRITON_INTERPRET=1, multi-rank tests over gloo).
# Sets up .venv first if needed. Extra arguments go to pytest.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
python -m pytest tests "$@"
