"""Opening a prepared dataset: every shard's index checked against its counts and its .bin (one line naming the
file), token files mapped with no descriptor kept, the per-sentence index built once into the cache."""
import json
import os
import shutil

import numpy as np
import pytest

from bertforge.data.indexed import IndexedDataset, read_shard_arrays
from bertforge.data.prepare import prepare
from bertforge.errors import DataError


@pytest.fixture
def copy(prepared, tmp_path):
    """A private copy of the prepared 4-shard dataset (without its cache)."""
    out = tmp_path / "ds"
    shutil.copytree(prepared[0], out, ignore=shutil.ignore_patterns("cache"))
    return out


def _one_line(exc_info, path):
    msg = str(exc_info.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("cut", ["half", "one byte", "header"])
def test_truncated_index_is_refused_naming_the_file(copy, cut):
    idx = copy / "shard_000000_0001.idx"
    data = idx.read_bytes()
    idx.write_bytes({"half": data[: len(data) // 2], "one byte": data[:-1], "header": data[:40]}[cut])
    with pytest.raises(DataError) as err:
        IndexedDataset(copy)
    msg = _one_line(err, idx)
    assert ("is cut or corrupt" in msg) and "prepare the dataset again" in msg


def test_short_bin_and_missing_files_are_refused_naming_the_file(copy):
    bin_ = copy / "shard_000000_0003.bin"
    bin_.write_bytes(bin_.read_bytes()[:-2])
    with pytest.raises(DataError) as err:
        IndexedDataset(copy)
    size = bin_.stat().st_size
    assert (f"token file is {size:,} bytes ({size / 1e3:.1f} kB) but its index expects {size + 2:,} bytes "
            f"({(size + 2) / 1e3:.1f} kB) (" in _one_line(err, bin_)) and "x 2 bytes, uint16): it is cut short" in \
        _one_line(err, bin_)
    (copy / "shard_000000_0002.idx").unlink()
    with pytest.raises(DataError) as err:
        IndexedDataset(copy)
    assert "cannot read shard index" in _one_line(err, copy / "shard_000000_0002.idx")


def test_offsets_that_disagree_with_the_header_are_refused(copy):
    idx = copy / "shard_000000_0000.idx"
    raw = bytearray(idx.read_bytes())
    start = 16 + int(np.frombuffer(raw[8:16], np.uint64)[0])
    raw[start:start + 8] = np.int64(5).tobytes()  # sentence_offsets[0] must be 0
    idx.write_bytes(bytes(raw))
    with pytest.raises(DataError) as err:
        IndexedDataset(copy)
    assert "index offsets do not match its header" in _one_line(err, idx)


def test_backwards_offsets_are_found_when_the_sentence_index_is_built(copy):
    idx = copy / "shard_000000_0001.idx"
    raw = bytearray(idx.read_bytes())
    start = 16 + int(np.frombuffer(raw[8:16], np.uint64)[0])
    so = np.frombuffer(raw[start:start + 8 * 4], np.int64).copy()
    raw[start + 8:start + 16] = np.int64(so[2]).tobytes()  # sentence 1 empty: offsets[1] == offsets[2]
    idx.write_bytes(bytes(raw))
    ds = IndexedDataset(copy)  # sizes and end points still agree
    with pytest.raises(DataError) as err:
        ds.sentence_index()
    assert "empty or backwards sentence" in _one_line(err, idx)
    assert not list((copy / "cache").glob("index-*"))  # nothing half-built


def test_prepare_rewrites_a_cut_shard(copy, wiki_slice, tokenizer_dir, prepared):
    idx = copy / "shard_000000_0001.idx"
    idx.write_bytes(idx.read_bytes()[:-1])
    stats = prepare([wiki_slice], tokenizer_dir, copy, shard_bytes=350_000, progress=False)
    assert (stats.shards_skipped, stats.shards_written) == (3, 1)
    assert idx.read_bytes() == (prepared[0] / idx.name).read_bytes()


def test_sentence_index_equals_the_shards_and_is_built_once(copy, tmp_path):
    ds = IndexedDataset(copy, cache_dir=tmp_path / "cache")
    starts, lengths, docs, hashes, sent_base = [], [], [np.zeros(1, np.int64)], [], 0
    for s, (name, h) in enumerate(zip(ds.meta["shards"], ds.headers)):  # the former in-memory concatenation
        so, do, dh = read_shard_arrays(copy / name, h)
        starts.append(so[:-1] + ds.token_bases[s])
        lengths.append(np.diff(so))
        docs.append(do[1:] + sent_base)
        hashes.append(dh)
        sent_base += len(so) - 1
    index = ds.sentence_index()
    for got, want in ((index.sentence_starts, starts), (index.sentence_lengths, lengths),
                      (index.doc_offsets, docs), (index.doc_hashes, hashes)):
        assert isinstance(got, np.memmap) and np.array_equal(got, np.concatenate(want))
    folder = ds.index_path()
    assert folder.parent == tmp_path / "cache"
    mtime = (folder / "doc_hashes.npy").stat().st_mtime_ns
    again = IndexedDataset(copy, cache_dir=tmp_path / "cache")
    assert np.array_equal(again.doc_offsets, index.doc_offsets)
    assert (folder / "doc_hashes.npy").stat().st_mtime_ns == mtime


def test_gather_and_tokens_cross_shards(prepared):
    ds = IndexedDataset(prepared[0])
    everything = np.concatenate([ds.shard_tokens.view(s) for s in range(4)]).astype(np.int64)
    rng = np.random.default_rng(0)
    pos = rng.integers(0, ds.num_tokens, size=(13, 17))
    assert np.array_equal(ds.gather(pos), everything[pos])
    b = int(ds.token_bases[2])
    assert np.array_equal(ds.tokens(b, b + 9), everything[b:b + 9])
    with pytest.raises(IndexError, match="not inside one shard"):
        ds.tokens(b - 2, b + 2)
    with pytest.raises(IndexError):
        ds.gather(np.array([ds.num_tokens]))


def test_opening_keeps_no_file_open(prepared):
    before = len(os.listdir("/proc/self/fd"))
    datasets = [IndexedDataset(prepared[0]) for _ in range(5)]
    assert len(os.listdir("/proc/self/fd")) == before
    assert all(d.gather(np.array([0, d.num_tokens - 1])).shape == (2,) for d in datasets)


def test_incomplete_parts_are_named(prepared, tmp_path):
    folder = tmp_path / "half"
    (folder / "parts").mkdir(parents=True)
    (folder / "parts" / "part-00001-of-00003.json").write_text(json.dumps({}))
    with pytest.raises(DataError, match=r"no meta.json; run `bertforge prepare`\); parts 0, 2 of 3 are not "
                                        r"prepared yet"):
        IndexedDataset(folder)
