"""The GPU path needs no built C++ extension: bertforge.model and bertforge.heads import, and a model runs on the
kernels' path, when `bertforge._csrc` cannot be imported (a machine that received the tree without built files); the
CPU dropout path, which needs it, says so when it is called."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_BLOCK = """
import sys
class _NoExtension:
    def find_spec(self, name, path=None, target=None):
        if name == "bertforge._csrc":
            raise ImportError("bertforge._csrc blocked by the test")
sys.meta_path.insert(0, _NoExtension())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _BLOCK + code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_model_and_heads_import_without_the_extension():
    res = _run("import bertforge.heads, bertforge.model, bertforge.ops, bertforge.parallelize\n"
               "assert 'bertforge.csrc' not in sys.modules and 'bertforge._csrc' not in sys.modules\nprint('ok')")
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_cpu_dropout_names_the_missing_extension():
    res = _run("import torch\nfrom bertforge.kernels import reference as R\nfrom bertforge import parallelize\n"
               "parallelize.apply_native_cpu()\nR.layer_norm_dropout_keep_ref(1, 2, 8, 0.1, None)")
    assert res.returncode != 0 and "bertforge._csrc is not built" in res.stderr, res.stderr[-2000:]
