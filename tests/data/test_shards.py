"""C++ MappedShards (csrc/shards.cpp) against its numpy reference: gather across shards of awkward sizes (empty
shards, one-token shards, a shard boundary at every step), both token dtypes, any position shape."""
import os

import numpy as np
import pytest

from bertforge.data.shards import ShardTokens, gather_ref
from bertforge.errors import DataError


def make_shards(tmp_path, sizes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    high = 65535 if np.dtype(dtype) == np.uint16 else 2**31 - 1
    paths = []
    for s, n in enumerate(sizes):
        path = tmp_path / f"s{s}.bin"
        rng.integers(0, high, n, endpoint=True).astype(dtype).tofile(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
@pytest.mark.parametrize("sizes", [[1], [7, 0, 13, 1, 0, 257], [1] * 31, [0, 0, 3], [4099, 1, 2]])
@pytest.mark.parametrize("shape", [(0,), (1,), (5, 11), (3, 7, 2)])
def test_gather_equals_reference(tmp_path, dtype, sizes, shape):
    paths = make_shards(tmp_path, sizes, dtype)
    mapped = ShardTokens(paths, sizes, dtype)
    rng = np.random.default_rng(len(sizes))
    pos = rng.integers(0, sum(sizes), size=shape)
    got = mapped.gather(pos)
    assert got.dtype == np.int64 and got.shape == shape
    assert np.array_equal(got, gather_ref(paths, sizes, dtype, pos))


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_every_position_in_order_and_reversed(tmp_path, dtype):
    sizes = [3, 0, 1, 5, 0, 0, 2]
    paths = make_shards(tmp_path, sizes, dtype, seed=3)
    mapped = ShardTokens(paths, sizes, dtype)
    whole = np.concatenate([np.fromfile(p, dtype=dtype) for p in paths]).astype(np.int64)
    for pos in (np.arange(11), np.arange(11)[::-1], np.array([10, 0, 10, 0, 5])):
        assert np.array_equal(mapped.gather(pos), whole[pos])
    for s in range(len(sizes)):
        view = mapped.view(s)
        assert view.dtype == dtype and len(view) == sizes[s] and not view.flags.writeable
        assert np.array_equal(view, np.fromfile(paths[s], dtype=dtype))
    assert np.array_equal(mapped.bases, np.concatenate([[0], np.cumsum(sizes)]))


def test_out_of_range_and_bad_files(tmp_path):
    paths = make_shards(tmp_path, [4, 4], np.uint16)
    mapped = ShardTokens(paths, [4, 4], np.uint16)
    for bad in ([8], [-1], [0, 3, 9]):
        with pytest.raises(IndexError, match="outside"):
            mapped.gather(np.array(bad))
    with pytest.raises(DataError, match=rf"^{paths[1]}: token file is 8 bytes but its index expects 10 bytes "
                                        r"\(5 tokens x 2 bytes\): it is cut short"):
        ShardTokens(paths, [4, 5], np.uint16)
    with pytest.raises(DataError, match=rf"^{tmp_path / 'gone.bin'}: cannot open"):
        ShardTokens([paths[0], tmp_path / "gone.bin"], [4, 4], np.uint16)


def test_views_outlive_the_object_and_no_descriptor_is_kept(tmp_path):
    sizes = [50] * 40
    paths = make_shards(tmp_path, sizes, np.uint16)
    before = len(os.listdir("/proc/self/fd"))
    mapped = ShardTokens(paths, sizes, np.uint16)
    assert len(os.listdir("/proc/self/fd")) == before  # 40 mappings, no open file
    view = mapped.view(39)
    want = np.fromfile(paths[39], dtype=np.uint16)
    del mapped
    assert np.array_equal(view, want)
