"""Where a dataset's derived files go (engine/data/cache.py); the real read-only case (another user, chmod) is
tests/data/test_prepare_scale.py::test_a_read_only_data_folder_trains."""
import shutil

import numpy as np
import pytest

from bertforge.data import cache
from bertforge.data.pretraining import PretrainingDataset
from bertforge.errors import DataError


def test_default_is_the_data_folder_when_writable_else_the_run_directory(tmp_path, monkeypatch):
    assert cache.default_cache_dir(tmp_path / "data", tmp_path / "run") == tmp_path / "data" / "cache"
    monkeypatch.setattr(cache, "writable", lambda folder: False)
    assert cache.default_cache_dir(tmp_path / "data", tmp_path / "run") == tmp_path / "run" / "data_cache"
    with pytest.raises(DataError, match=r"data: the data folder is read-only: give a cache folder .*--data-cache"):
        cache.default_cache_dir(tmp_path / "data")
    assert cache.resolve_cache_dir(tmp_path / "data", tmp_path / "mine", None) == tmp_path / "mine"


def test_files_shipped_in_the_data_cache_are_used_where_they_are(prepared, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(prepared[0], data, ignore=shutil.ignore_patterns("cache"))
    built = PretrainingDataset(data, max_seq_length=64, split="all")  # builds into DATA/cache
    assert built.map_path.parent == data / "cache"
    elsewhere = PretrainingDataset(data, max_seq_length=64, split="all", cache_dir=tmp_path / "other")
    assert elsewhere.map_path == built.map_path and not (tmp_path / "other").exists()
    assert np.array_equal(elsewhere.samples, built.samples)
    fresh = PretrainingDataset(data, max_seq_length=64, split="all", seed=3, cache_dir=tmp_path / "other")
    assert fresh.map_path.parent == tmp_path / "other"  # what is not shipped is built in the cache folder given
