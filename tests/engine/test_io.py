"""Atomic outputs: complete or absent, never half-written, and with the mode the user's umask gives new files (the
private temporaries of mkstemp/mkdtemp must not leak their 0600/0700 into final outputs)."""
import os
import stat

import pytest

from bertforge import io


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_and_folders_follow_the_umask(tmp_path, umask):
    f = io.write_json(tmp_path / "a" / "x.json", {"k": 1})
    assert _mode(f) == 0o666 & ~umask
    with io.atomic_dir(tmp_path / "model") as tmp:
        (tmp / "weights.bin").write_bytes(b"123")
    assert _mode(tmp_path / "model") == 0o777 & ~umask
    assert _mode(tmp_path / "model" / "weights.bin") == 0o666 & ~umask


def test_exported_model_folder_is_readable_by_the_group_under_umask_022(tmp_path):
    import torch

    from bertforge.config.model import tiny
    from bertforge.hf import export_hf
    from bertforge.model import BertModel

    old = os.umask(0o022)
    try:
        torch.manual_seed(0)
        out = export_hf(BertModel(tiny(vocab_size=50, hidden_size=16, num_attention_heads=2, intermediate_size=32)),
                        tmp_path / "hf")
    finally:
        os.umask(old)
    assert _mode(out) == 0o755
    assert {_mode(p) for p in out.iterdir()} == {0o644}


def test_a_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "summary.json"
    io.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with io.atomic_file(target, "w") as fh:
            fh.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    with pytest.raises(RuntimeError):
        with io.atomic_dir(tmp_path / "dir") as tmp:
            (tmp / "part").write_text("x")
            raise RuntimeError("interrupted")
    assert not (tmp_path / "dir").exists() and len(list(tmp_path.iterdir())) == 1


def test_replacing_a_folder_swaps_it_whole(tmp_path):
    with io.atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a").write_text("1")
    with io.atomic_dir(tmp_path / "out") as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
