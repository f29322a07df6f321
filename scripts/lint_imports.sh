#!/usr/bin/env bash
# The architecture contracts of pyproject.toml [tool.importlinter] (import-linter). grimp reads a package from one
# folder per top-level name, while bertforge is installed from two (engine/ -> bertforge, kernels/ ->
# bertforge.kernels): the check runs on the import tree laid out by scripts/import_tree.py in a temporary folder.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TREE="$(mktemp -d)"
trap 'rm -rf "$TREE"' EXIT
python "$ROOT/scripts/import_tree.py" "$TREE"
cd "$ROOT"
PYTHONPATH="$TREE" lint-imports --no-cache "$@"
