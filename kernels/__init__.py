"""Triton kernels for bertforge, installed as `bertforge.kernels`. One op per file (kernels -> launchers ->
autograd.Function / custom op -> public function); the pure-torch references of all of them live in
`bertforge.kernels.reference`, the CPU path and the test oracle. Importing this package or `bertforge.kernels.reference`
never imports Triton; `bertforge.kernels.<op>` modules do.

The top-level import name `kernels` belongs to Hugging Face's package (transformers probes for it). Run from the
repository root (tests, `python -m`), sys.path[0] makes this folder findable under that name; imported so, it hands
the name to the installed `kernels` package; with none installed it stays an empty module without a version (what
transformers' availability probe, which imports it, reads as "not available")."""
if __name__ == "kernels":
    import importlib.machinery
    import importlib.util
    import os
    import sys

    _repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _repo]
    _spec = importlib.machinery.PathFinder.find_spec("kernels", _path)
    if _spec is not None and _spec.loader is not None:
        _module = importlib.util.module_from_spec(_spec)
        sys.modules["kernels"] = _module  # the import statement returns what sys.modules holds after this body
        _spec.loader.exec_module(_module)
