# Sourced by check_triton36.sh and gpu_rehearsal.sh: creates (once) the side environment .venv-triton36 with the
# pinned set requirements/lock-triton36.txt (the lent GPU machine's package set as far as the registries allow: torch
# 2.13.0 CPU standing in for its CUDA torch, triton 3.6.0, transformers 5.17.0, ...; no deepspeed, no seqeval) and
# sets VENV36 to it. Rebuilt when requirements/triton36.in or the lock change, or when BERTFORGE_FRESH_VENV=1.
. "$ROOT/scripts/install.sh"
VENV36="$ROOT/.venv-triton36"
_stamp36="$VENV36/.installed-triton36"
_want36="$(cat "$ROOT/requirements/triton36.in" "$ROOT/requirements/lock-triton36.txt" | sha1sum | cut -c1-12)"
if [ "${BERTFORGE_FRESH_VENV:-0}" = 1 ] || [ ! -f "$_stamp36" ] || [ "$(cat "$_stamp36")" != "$_want36" ]; then
    echo "== bertforge: setting up $VENV36 (triton 3.6.0, pinned set requirements/lock-triton36.txt)" >&2
    rm -rf "$VENV36"
    python3 -m venv "$VENV36"
    # shellcheck disable=SC1091
    . "$VENV36/bin/activate"
    install_set triton36 locked
    check_set triton36
    echo "$_want36" > "$_stamp36"
    deactivate
fi
