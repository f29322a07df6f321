#!/usr/bin/env bash
# Rehearses the one prepared GPU call (README, "GPU") on this CPU machine, as faithfully as a CPU allows, so that the
# call works the first time it runs:
#   1. what the call carries: scripts/gpu_carry.sh prepares the paths of scripts/gpu_carry.list (DeepSpeed wheels,
#      the quickstart corpus and tokenizer, MiniLM's config + a stratified labelled sample);
#   2. a copy of exactly what the device receives: tracked files and untracked files git does not ignore (the
#      working tree as `git ls-files --cached --others --exclude-standard` lists it) plus the carried paths; no .venv,
#      no built *.so, no data cache; checked against the 64 MiB limit;
#   3. the device's package set as far as the registries allow (scripts/triton36_venv.sh: triton 3.6.0, torch 2.13.0
#      CPU standing in for 2.11+cu130, transformers 5.17.0, ...; no deepspeed, no seqeval, no sentencex). The
#      registry's transformers 5.17.0 needs typer, which needs pydantic: unlike the device, the side environment has
#      pydantic; the carried pydantic wheels come first on the steps' PYTHONPATH, so they are what DeepSpeed imports;
#   4. the carried wheels as the device installs them (the call's preflight: pip --no-index --no-deps --target).
#      The one deviation: the device's Python is 3.12, ours 3.11, so the cp312 wheels of the carry cannot install
#      here. They are checked as the device would install them (pip --dry-run --python-version 3.12 over the whole
#      .whl set), then swapped in the copy for the same releases built for this Python (pip download); the
#      pure-Python wheels (DeepSpeed, pydantic, hjson, ...) are installed as carried;
#   5. the call's own command, `python3 benchmarks/gpu_check.py --out "$OUT"`, with --dry-run (tiny shapes, every
#      Triton kernel under the interpreter, DS_ACCELERATOR=cpu), from the copy, with the side environment's python3
#      first on PATH and nothing of ours on PYTHONPATH;
#   6. asserts: every step ended "ok" (none failed, timed out or was skipped), and what comes back under $OUT obeys
#      the device tool's limits (<= 8 files, <= 16 MiB each, <= 2 folders down, names of [A-Za-z0-9._-]).
# CI runs it (.ci/run). Time: ~1-2 min for the side environment when the pins changed (else 0), ~1 min for the carry
# (cached after the first run), the dry run ~3 min on 2 idle cores. Exit 0 only when every check passed.
#   bash scripts/gpu_rehearsal.sh [--keep]     (--keep: leave the copy and $OUT in place and print where)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
keep=0
[ "${1:-}" = --keep ] && keep=1
say() { echo "== gpu_rehearsal: $*" >&2; }
fail() { echo "gpu_rehearsal: FAIL: $*" >&2; exit 1; }

# DeepSpeed's CPU communication op (the dry run's stand-in accelerator; the device uses NCCL) is JIT-built, keyed by
# its build flags, which name the scratch site: the call's scratch folder ($TMPDIR of the command) lives at one path
# and the op in a folder of its own (one shared with the project's venv would be rebuilt by each in turn), so that it
# is built once, not on every rehearsal (~1-3 min)
export BERTFORGE_CACHE="${BERTFORGE_CACHE:-$HOME/.cache/bertforge}"
export TORCH_EXTENSIONS_DIR="$BERTFORGE_CACHE/gpu-rehearsal-ext"
CALL_TMP="$BERTFORGE_CACHE/gpu-rehearsal-tmp"
mapfile -t CARRY < <(grep -v '^\s*\(#\|$\)' scripts/gpu_carry.list)
# 1. the carry (with the project's own environment: it builds the DeepSpeed wheel against torch)
if [ "${BERTFORGE_REHEARSAL_SKIP_CARRY:-0}" != 1 ]; then
    say "preparing the carry (scripts/gpu_carry.sh)"
    # the project's environment as it stands (CI built it fresh minutes ago: BERTFORGE_FRESH_VENV must not rebuild it)
    BERTFORGE_FRESH_VENV=0 bash scripts/gpu_carry.sh >&2
fi
for p in "${CARRY[@]}"; do [ -e "$p" ] || fail "carried path $p is missing (run scripts/gpu_carry.sh)"; done

# 3. the device's package set (before the copy: the venv lives in the repository, ignored, and is never copied)
# (CI's check_triton36.sh built it fresh just before: here only a change of the pins rebuilds it)
fresh="${BERTFORGE_FRESH_VENV:-0}"
BERTFORGE_FRESH_VENV=0
. "$ROOT/scripts/triton36_venv.sh"
BERTFORGE_FRESH_VENV="$fresh"

# 2. the copy
BASE="$(mktemp -d "${TMPDIR:-/tmp}/gpu-rehearsal.XXXXXX")"
if [ "$keep" = 0 ]; then trap 'rm -rf "$BASE"' EXIT; fi
DEST="$BASE/repo"
mkdir -p "$DEST" "$BASE/out" "$BASE/tmp" "$CALL_TMP"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] && printf '%s\0' "$f"
done | tar --null -T - -cf - | tar -xf - -C "$DEST"
tar -cf - "${CARRY[@]}" | tar -xf - -C "$DEST"
size=$(du -sb "$DEST" | cut -f1)
say "copy: $(find "$DEST" -type f | wc -l) files, $((size / 1024)) KiB (limit 64 MiB)"
[ "$size" -le $((64 * 1024 * 1024)) ] || fail "the call's working tree is $size bytes, over the 64 MiB limit"
[ -z "$(find "$DEST" -name '*.so' -print -quit)" ] || fail "a built *.so travels: $(find "$DEST" -name '*.so' | head -3)"
[ ! -e "$DEST/.venv" ] && [ ! -e "$DEST/.venv-triton36" ] || fail "a virtual environment travels"

# 4. the cp312 wheels: checked for the device's Python, swapped for this Python's builds in the copy only
PY36="$VENV36/bin/python"
dev_tags=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
"$PY36" -m pip install -q --dry-run --no-index --no-deps --only-binary=:all: "${dev_tags[@]}" --target "$BASE/tmp/dev" \
    "$DEST"/.whl/*.whl || fail "the carried wheels would not install on the device's Python 3.12 (see above)"
say "the carried wheels install on Python 3.12 (pip --dry-run --python-version 3.12)"
"$PY36" - "$DEST/.whl" "$BASE/tmp/swap.txt" <<'PY'
import sys
from pathlib import Path
from pip._vendor.packaging.tags import sys_tags
from pip._vendor.packaging.utils import parse_wheel_filename
here = set(sys_tags())
swap = []
for w in sorted(Path(sys.argv[1]).glob("*.whl")):
    name, version, _, tags = parse_wheel_filename(w.name)
    if not here & set(tags):
        swap.append(f"{name}=={version} {w}")
Path(sys.argv[2]).write_text("".join(s + "\n" for s in swap))
PY
while read -r spec path; do
    [ -n "$spec" ] || continue
    rm "$path"
    "$PY36" -m pip download -q --no-deps --only-binary=:all: -d "$DEST/.whl" "$spec" \
        || fail "no build of $spec for this Python (the rehearsal's stand-in for the device's cp312 wheel)"
    say "stand-in: $(basename "$path") -> this Python's build of $spec"
done < "$BASE/tmp/swap.txt"

# 5. the call's command, from the copy, in the device's package set
say "running the GPU command with --dry-run in $DEST"
set +e
(cd "$DEST" && env -u PYTHONPATH -u VIRTUAL_ENV -u TRITON_INTERPRET -u PYTHONHOME \
    PATH="$VENV36/bin:$PATH" TMPDIR="$CALL_TMP" OUT="$BASE/out" DS_ACCELERATOR=cpu \
    python3 benchmarks/gpu_check.py --out "$BASE/out" --dry-run)
rc=$?
set -e

# 6. the asserts
python3 - "$BASE/out" "$rc" <<'PY'
import json, re, sys
from pathlib import Path
out, rc = Path(sys.argv[1]), int(sys.argv[2])
problems = []
files = [p for p in out.rglob("*") if p.is_file()]
if len(files) > 8:
    problems.append(f"{len(files)} files under $OUT (the device brings back 8)")
for p in out.rglob("*"):
    rel = p.relative_to(out)
    if p.is_file() and p.stat().st_size > 16 * 2**20:
        problems.append(f"{rel}: {p.stat().st_size} bytes (over 16 MiB)")
    if len(rel.parts) > 3 or not all(re.fullmatch(r"[A-Za-z0-9._-]+", x) for x in rel.parts):
        problems.append(f"{rel}: too deep or a name the device tool does not bring back")
summary_path = out / "gpu_check.json"
if not summary_path.is_file():
    problems.append("no gpu_check.json under $OUT")
else:
    summary = json.loads(summary_path.read_text())
    for r in summary["steps"]:
        if r["status"] != "ok":
            problems.append(f"step {r['step']}: {r['status']}" + "".join("\n    " + x for x in r.get("tail", [])[-8:]))
    if not summary.get("packed"):
        problems.append("the logs were not packed")
    names = {r["step"] for r in summary["steps"]}
    print("gpu_rehearsal: steps " + ", ".join(f"{r['step']} {r['seconds']:.0f} s" for r in summary["steps"]))
if rc != 0:
    problems.append(f"gpu_check.py exited {rc}")
if problems:
    print("gpu_rehearsal: FAIL:\n  " + "\n  ".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"gpu_rehearsal: ok: every step ended ok; {len(files)} files back under $OUT: "
      + ", ".join(f"{p.name} {p.stat().st_size // 1024} KiB" for p in sorted(files)))
PY
[ "$keep" = 1 ] && say "kept: copy $DEST, out $BASE/out"
exit 0
