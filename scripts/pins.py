"""Pinned-set helpers for the set-up scripts (stdlib only; runs in the venv being set up).

    python scripts/pins.py freeze                      # the installed set as `name==version` lines (a lock body)
    python scripts/pins.py check LOCK [LOCK ...] [--allow-extra REGEX] [--ignore NAME ...]
                                                       # installed set == union of the locks, or exit 1 listing why
    python scripts/pins.py failed LOG                  # one line naming the package a failed `pip install` was on

Names are compared in PEP 503 normal form (`Foo_Bar` == `foo-bar`). `pip` itself (the venv's bundled one) and the
editable project (`bertforge`) are never part of a lock.
"""
from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata

ALWAYS_IGNORED = {"pip", "bertforge"}


def canonical(name: str) -> str:
    """PEP 503 normal form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, str]:
    """{canonical name: version} of every distribution importable from this interpreter's site-packages."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found[canonical(name)] = dist.version
    return found


def read_lock(path: str) -> dict[str, str]:
    """{canonical name: version} from a lock file of `name==version` lines (comments and blanks ignored).

    Raises SystemExit naming the file and line when a line is not an exact pin."""
    pins: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
            if not m:
                raise SystemExit(f"{path}:{lineno}: not an exact pin `name==version`: {line!r}")
            pins[canonical(m.group(1))] = m.group(2)
    return pins


def check(locks: list[str], allow_extra: str | None, ignore: list[str]) -> list[str]:
    """Differences between the installed set and the union of `locks`, one readable line each (empty: equal)."""
    want: dict[str, str] = {}
    for path in locks:
        want.update(read_lock(path))
    have = installed()
    skip = ALWAYS_IGNORED | {canonical(n) for n in ignore}
    extra_ok = re.compile(allow_extra) if allow_extra else None
    problems = []
    for name in sorted(set(want) | set(have)):
        if name in skip:
            continue
        if name not in have:
            problems.append(f"missing: {name}=={want[name]} is pinned but not installed")
        elif name not in want:
            if not (extra_ok and extra_ok.fullmatch(name)):
                problems.append(f"unpinned: {name}=={have[name]} is installed but in no lock file")
        elif have[name] != want[name]:
            problems.append(f"version: {name}=={have[name]} installed, {want[name]} pinned")
    return problems


def failed_package(log_text: str) -> str:
    """The package a failed pip run was working on, with pip's one-line reason when it gave one."""
    reason = ""
    for line in log_text.splitlines():
        m = re.search(r"No matching distribution found for (\S+)", line)
        if m:
            return f"{m.group(1)} (no matching distribution on the registry)"
        m = re.search(r"(ModuleNotFoundError: .*|error: metadata-generation-failed|"
                      r"error: subprocess-exited-with-error|Failed to build \S+)", line)
        if m and not reason:
            reason = m.group(1)
    current = ""
    for line in log_text.splitlines():
        m = re.match(r"\s*(?:Collecting|Building wheel for|Processing|Obtaining|Preparing metadata.*? for) (\S+)",
                     line)
        if m:
            current = m.group(1)
        m = re.search(r"Failed to build (\S+)", line)
        if m:
            current = m.group(1)
    what = current or "an unknown package"
    return f"{what} ({reason})" if reason else what


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pins.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("freeze", help="print the installed set as name==version lines")
    p_check = sub.add_parser("check", help="installed set == union of the lock files")
    p_check.add_argument("locks", nargs="+")
    p_check.add_argument("--allow-extra", default=None, help="regex of names that may be installed unpinned")
    p_check.add_argument("--ignore", nargs="*", default=[], help="names left out of the comparison")
    p_failed = sub.add_parser("failed", help="name the package a failed pip log stopped on")
    p_failed.add_argument("log")
    args = parser.parse_args(argv)

    if args.cmd == "freeze":
        for name, version in sorted(installed().items()):
            if name not in ALWAYS_IGNORED:
                print(f"{name}=={version}")
        return 0
    if args.cmd == "failed":
        with open(args.log, encoding="utf-8", errors="replace") as fh:
            print(failed_package(fh.read()))
        return 0
    problems = check(args.locks, args.allow_extra, args.ignore)
    if problems:
        print(f"installed set != pinned set ({', '.join(args.locks)}):", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        print("  refresh the pins with `bash scripts/lock.sh` (README, Set-up) or reinstall the venv", file=sys.stderr)
        return 1
    print(f"pins: installed set equals {' + '.join(args.locks)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
