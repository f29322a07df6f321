"""A left build lock of DeepSpeed's CPU comm op (a process killed while it compiled) makes joining the process group
wait without a word: `comm_op_build_locks` finds it under $TORCH_EXTENSIONS_DIR (or torch's default root with its
flavour folder) and `init_distributed` logs one warning line per lock, naming the file and what to do."""
import os
import time

from bertforge import deepspeed as ds


def _lock(folder):
    folder.mkdir(parents=True)
    lock = folder / "lock"
    lock.write_text("")
    return lock


def test_lock_found_with_its_age(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert ds.comm_op_build_locks() == []
    _lock(tmp_path / "some_other_op")
    assert ds.comm_op_build_locks() == []
    lock = _lock(tmp_path / ds.SHM_COMM_OP)
    old = time.time() - 30 * 60
    os.utime(lock, (old, old))
    (line,) = ds.comm_op_build_locks()
    assert str(lock) in line and "(30 min old)" in line and "delete that file" in line


def test_default_root_flavour_folder(tmp_path, monkeypatch):
    import torch.utils.cpp_extension as ext

    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    monkeypatch.setattr(ext, "get_default_build_root", lambda: str(tmp_path))
    lock = _lock(tmp_path / "py311_cpu" / ds.SHM_COMM_OP)
    (line,) = ds.comm_op_build_locks()
    assert str(lock) in line


def test_init_distributed_warns_before_joining(tmp_path, monkeypatch, caplog):
    """The warning comes before DeepSpeed's init (where the wait happens); the stub stands in for it."""
    import torch.distributed as dist

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    _lock(tmp_path / ds.SHM_COMM_OP)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(ds.torch.cuda, "is_available", lambda: False)  # the CPU (gloo) path, where the op is built
    seen = []

    class _Stub:
        @staticmethod
        def init_distributed(**kwargs):
            seen.append([r.getMessage() for r in caplog.records])

    monkeypatch.setattr(ds, "_ds", lambda: _Stub)
    monkeypatch.setattr(ds, "quiet_deepspeed", lambda: __import__("contextlib").nullcontext())
    with caplog.at_level("WARNING", logger="bertforge"):
        ds.init_distributed(60)
    assert len(seen) == 1 and any("waiting for the build of DeepSpeed's CPU communication op" in m for m in seen[0])
