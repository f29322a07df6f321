# Sourced by env.sh, check_triton36.sh and lock.sh: `install_set KIND MODE` installs one environment's package set
# into the ACTIVE venv, in an order that lets every source-only package build without build isolation:
#   1. the build tools (requirements/build.in: setuptools, wheel, pybind11, setuptools-scm),
#   2. torch (deepspeed's setup.py imports it),
#   3. the rest, built with --no-build-isolation against 1 and 2 (deepspeed, seqeval are source archives),
#   4. bertforge itself, editable (its C++ extension; never torch at build time).
# KIND: cpu | gpu | triton36.  MODE: locked (constrained by requirements/lock-*.txt, the normal path) or fresh (the
# .in ranges resolved anew; used only by lock.sh to refresh the pins). A failed pip call prints ONE line naming the
# package and the log file, and returns 1.
REQ="$ROOT/requirements"

_pip_install() {  # _pip_install ARGS... : quiet pip install into the active venv, one-line failure
    local log="$VIRTUAL_ENV/pip-install.log"
    echo "+ pip install $*" >>"$log"
    if ! python -m pip install --no-input "$@" >>"$log" 2>&1; then
        echo "bertforge set-up: pip could not install $(python "$ROOT/scripts/pins.py" failed "$log"); full log:" \
             "$log. Check that the package registry is reachable; if a pinned release was withdrawn, refresh the" \
             "pins with \`bash scripts/lock.sh\` (README, Set-up)." >&2
        return 1
    fi
}

lock_files() {  # lock_files KIND: the lock files whose union is KIND's pinned set
    case "$1" in
        cpu) echo "$REQ/lock-cpu.txt" ;;
        gpu) echo "$REQ/lock-gpu.txt" ;;
        triton36) echo "$REQ/lock-triton36.txt" ;;
    esac
}

install_set() {  # install_set cpu|gpu|triton36 locked|fresh
    local kind="$1" mode="$2" c=() cons="$VIRTUAL_ENV/constraints.txt"
    : > "$cons"
    if [ "$kind" = gpu ]; then
        # every package but torch/triton (and torch's CUDA libraries) is the CPU lock's, in both modes
        grep -vE '^(torch|triton)==' "$REQ/lock-cpu.txt" >> "$cons"
        [ "$mode" = locked ] && cat "$REQ/lock-gpu.txt" >> "$cons"
    elif [ "$mode" = locked ]; then
        cat "$(lock_files "$kind")" >> "$cons"
    fi
    c=(-c "$cons")
    case "$kind" in
        triton36)
            _pip_install "${c[@]}" -r "$REQ/triton36.in" ;;
        cpu|gpu)
            local torch_in="$REQ/cpu.in" rest
            [ "$kind" = gpu ] && torch_in="$REQ/gpu.in"
            rest="$VIRTUAL_ENV/rest.in"
            grep -vE '^(torch|triton)==' "$REQ/cpu.in" > "$rest"
            _pip_install "${c[@]}" -r "$REQ/build.in" &&
            _pip_install "${c[@]}" $(grep -E '^(torch|triton)==' "$torch_in" | cut -d' ' -f1) &&
            _pip_install "${c[@]}" --no-build-isolation -r "$rest" -r "$REQ/test.in" &&
            _pip_install "${c[@]}" --no-build-isolation -e "$ROOT" ;;
        *) echo "install_set: unknown kind $kind" >&2; return 2 ;;
    esac
}

check_set() {  # check_set KIND: the installed set equals KIND's pins (fails naming each difference)
    if [ "$1" = gpu ]; then
        # later locks win: lock-gpu.txt's torch/triton replace lock-cpu.txt's; torch pins its own CUDA libraries
        # (nvidia-*, cuda-*) exactly, so those may appear beyond what lock-gpu.txt lists
        python "$ROOT/scripts/pins.py" check "$REQ/lock-cpu.txt" "$REQ/lock-gpu.txt" --allow-extra '(nvidia|cuda)-.*'
    else
        python "$ROOT/scripts/pins.py" check $(lock_files "$1")
    fi
}
