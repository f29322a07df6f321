"""bertforge and Hugging Face's `kernels` package installed side by side in this venv (requirements/test.in pins
kernels): both import, each is itself, and transformers' probe for `kernels` finds Hugging Face's package, not
ours. Runs in a child process outside the repository, and again from the repository root, where sys.path[0] finds
the kernels/ folder under the top-level name first (kernels/__init__.py hands the name to the installed package)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import importlib.metadata as md, json, sys
import bertforge, bertforge.kernels
import kernels
from transformers.utils import import_utils
print(json.dumps({
    "bertforge_kernels": bertforge.kernels.__file__,
    "kernels": kernels.__file__,
    "kernels_version": md.version("kernels"),
    "kernels_module_version": getattr(kernels, "__version__", None),
    "hf_api": all(hasattr(kernels, name) for name in ("get_kernel", "kernelize")),
    "probe": import_utils.is_kernels_available(),
    "probe_range": [import_utils.KERNELS_MIN_VERSION, import_utils.KERNELS_MAX_VERSION],
    "owners": md.packages_distributions().get("kernels"),
    "bertforge_top_level": (md.distribution("bertforge").read_text("top_level.txt") or "").split(),
}))
"""


@pytest.mark.parametrize("where", ["outside", "repository root"])
def test_bertforge_and_hf_kernels_import_side_by_side(tmp_path, where):
    cwd = tmp_path if where == "outside" else ROOT
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, capture_output=True, text=True, timeout=300)
    if "No module named 'kernels'" in out.stderr:
        raise AssertionError("Hugging Face's `kernels` package is not installed in this venv: install the locked "
                             "test set (requirements/test.in pins kernels; scripts/env.sh)")
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    ours = Path(got["bertforge_kernels"]).resolve().parent  # editable: ROOT/kernels; a wheel: .../bertforge/kernels
    assert ours == ROOT / "kernels" or ours.parts[-2:] == ("bertforge", "kernels"), ours
    theirs = Path(got["kernels"]).resolve().parent
    assert theirs != ours and theirs != ROOT / "kernels", f"`import kernels` found ours: {got['kernels']}"
    assert got["hf_api"], "`import kernels` is not Hugging Face's package (no get_kernel / kernelize)"
    assert got["owners"] == ["kernels"], f"distributions providing a top-level `kernels`: {got['owners']}"
    assert got["bertforge_top_level"] == ["bertforge"]
    assert got["kernels_version"] == got["kernels_module_version"] != "0.1.0"
    low, high = got["probe_range"]
    from packaging.version import Version

    assert got["probe"] == (Version(low) <= Version(got["kernels_version"]) < Version(high))
    assert got["probe"], f"transformers wants kernels in [{low}, {high}); pinned {got['kernels_version']}"


def test_repository_kernels_folder_without_hf_kernels_is_an_empty_versionless_module():
    """From the repository root with no installed `kernels` (the GPU machine's package set), `import kernels` finds
    the kernels/ folder: it must import (transformers' availability probe imports it and does not catch errors) and
    carry no version, which the probe reads as "not available"."""
    code = ("import sys, sysconfig\n"
            "sys.path[:] = ['', sysconfig.get_paths()['stdlib'], sysconfig.get_paths()['platstdlib']]\n"
            "import kernels\n"
            "assert not hasattr(kernels, '__version__') and not hasattr(kernels, 'kernelize'), dir(kernels)\n"
            "print('ok', kernels.__name__)\n")
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok kernels", out.stderr[-2000:]
