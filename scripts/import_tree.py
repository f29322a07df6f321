"""Lays out the installed import tree of bertforge under DEST without installing it: engine/ -> DEST/bertforge,
kernels/ -> DEST/bertforge/kernels (the package-dir mapping of pyproject.toml), Python files and a built C++
extension (`_csrc*.so`) if one is present. Standard library only, so any Python can run it.

Used where the package cannot be installed editable: import-linter (grimp reads packages from one folder per top-level
name) and the triton 3.6 side environment's kernel tests (scripts/lint_imports.sh, scripts/check_triton36.sh).

    python scripts/import_tree.py DEST      # then PYTHONPATH=DEST python -c "import bertforge.kernels"
"""
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAPPING = {"bertforge": ROOT / "engine", "bertforge/kernels": ROOT / "kernels"}  # pyproject.toml [tool.setuptools]


def lay_out(dest: Path) -> None:
    for name, src in MAPPING.items():
        for path in src.rglob("*"):
            if path.is_file() and (path.suffix == ".py" or (path.name.startswith("_csrc") and path.suffix == ".so")):
                rel = path.relative_to(src)
                if "__pycache__" in rel.parts:
                    continue
                target = dest / name / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/import_tree.py DEST")
    lay_out(Path(sys.argv[1]))
