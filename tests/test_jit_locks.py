"""The stale JIT build lock guard (tests/_jit_locks.py, run by tests/conftest.py before any test)."""
import os
import time
from types import SimpleNamespace

from tests import conftest
from tests._jit_locks import STALE_AFTER_S, clear_stale_locks


def _lock(path, age_s):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_old_locks_are_removed_and_fresh_ones_kept(tmp_path):
    stale = _lock(tmp_path / "deepspeed_shm_comm" / "lock", STALE_AFTER_S + 60)
    nested = _lock(tmp_path / "py311_cpu" / "deepspeed_shm_comm" / "lock", 3 * 3600)  # torch's default root layout
    fresh = _lock(tmp_path / "other_op" / "lock", 60)  # a build running now: kept
    lines = clear_stale_locks(tmp_path)
    assert not stale.exists() and not nested.exists() and fresh.exists()
    assert len(lines) == 2 and all(line.startswith("removed a stale JIT build lock ") for line in lines)
    assert str(stale) in "".join(lines) and "16 min old" in "".join(lines)
    assert clear_stale_locks(tmp_path) == []  # nothing left to say


def test_session_start_clears_the_extensions_dir(tmp_path, monkeypatch):
    stale = _lock(tmp_path / "deepspeed_shm_comm" / "lock", STALE_AFTER_S + 1)
    fresh = _lock(tmp_path / "deepspeed_cpu_adam" / "lock", 5)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    written = []
    reporter = SimpleNamespace(write_line=written.append)
    session = SimpleNamespace(config=SimpleNamespace(pluginmanager=SimpleNamespace(get_plugin=lambda name: reporter)))
    conftest.pytest_sessionstart(session)
    assert not stale.exists() and fresh.exists()
    assert len(written) == 1 and str(stale) in written[0]
