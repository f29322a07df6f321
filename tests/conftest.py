"""Test-wide setup. TRITON_INTERPRET must be set before any module with @triton.jit is imported, so it lives here.
On a machine without a GPU every Triton kernel runs under the interpreter on CPU tensors."""
import os

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")
try:
    import torch

    _HAS_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _HAS_CUDA = False
if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")



def pytest_sessionstart(session):
    """Before any test: remove the JIT build locks a killed run left behind (tests/_jit_locks.py), one line each;
    otherwise the first DeepSpeed test waits ~600 s on such a lock."""
    from bertforge.deepspeed import jit_build_root
    from tests._jit_locks import clear_stale_locks

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for line in clear_stale_locks(jit_build_root()):
        if reporter is not None:
            reporter.write_line(line)
        else:
            print(line, flush=True)


_LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


_LAUNCHER_ENV = {k: os.environ.get(k) for k in _LAUNCHER_VARS}  # as the session started


@pytest.fixture(autouse=True)
def _isolated_launcher_state():
    """A test that runs a command in-process (bertforge.cli main) fills the launcher variables
    (bertforge.distributed.prepare_env), also from module-scoped fixtures. They go back to the session's start
    after every test: a later child process would otherwise inherit MASTER_PORT while this process still listens on
    it (EADDRINUSE). The default process group such a run joined stays (DeepSpeed caches its groups); a test that
    needs to look unlaunched patches torch.distributed.is_initialized (tests/training/test_config_cli.py)."""
    yield
    for k, v in _LAUNCHER_ENV.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# ---- shared data fixtures: a slice of the real Wikipedia extracts (fetched once into $BERTFORGE_CACHE), a small
# WordPiece vocabulary trained on it, and the slice prepared as an indexed dataset --------------------------------
import json  # noqa: E402


N_DOCS = 2500  # of 10,033 extracts; ~9k sentences, ~280k tokens


@pytest.fixture(scope="session")
def wiki_file():
    from bertforge.data.fetch import fetch

    return fetch("wiki")


@pytest.fixture(scope="session")
def wiki_slice(wiki_file, tmp_path_factory):
    data = json.loads(wiki_file.read_text())
    keys = list(data)[:N_DOCS]
    path = tmp_path_factory.mktemp("wiki") / "wiki_slice.json"
    path.write_text(json.dumps({k: data[k] for k in keys}, indent=2))
    return path


@pytest.fixture(scope="session")
def tokenizer_dir(wiki_slice, tmp_path_factory):
    from bertforge.data.tokenizer import train_wordpiece

    out = tmp_path_factory.mktemp("tok")
    train_wordpiece([wiki_slice], out, vocab_size=3000, show_progress=False)
    return out


@pytest.fixture(scope="session")
def prepared(wiki_slice, tokenizer_dir, tmp_path_factory):
    from bertforge.data.prepare import prepare

    out = tmp_path_factory.mktemp("prepared")
    stats = prepare([wiki_slice], tokenizer_dir, out, shard_bytes=350_000, progress=False)  # 4 shards
    return out, stats
