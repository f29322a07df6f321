"""Derived files of a dataset are built by one process under a file lock (engine/data/cache.py `build_once`), the
others waiting: several gloo ranks opening a freshly prepared dataset on an empty cache all start, with the same
maps; a refusal reaches every rank as the same line; a builder killed mid-build leaves a cache the next run repairs.

The ranks are long-lived spawned processes in one gloo group (file store), released together by a barrier for
each round and calling the trainer's dataset-opening path (CorpusSource.start: per-sentence index, NSP maps of both
splits, then the MLM-only grouping) on a new empty cache folder."""
import hashlib
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from bertforge.data import cache
from bertforge.errors import DataError

ROUNDS = 20
WORLD = 4


def _digest(arr) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()[:16]


def _counting(owner, name, builds):
    """Wrap builder `owner.name` so that its calls in this process are counted in builds[name]."""
    inner = getattr(owner, name)

    def counted(*args, **kwargs):
        builds[name] += 1
        return inner(*args, **kwargs)

    setattr(owner, name, counted)


def _rank_main(rank, store, barriers, tasks, results, data_dir):
    import torch.distributed as dist
    from bertforge.config.pretrain import PretrainConfig
    from bertforge.data import indexed, sample_map
    from bertforge.data.source import CorpusSource

    builds = {"_build_index": 0, "_select_to_files": 0}
    _counting(indexed.IndexedDataset, "_build_index", builds)
    _counting(sample_map, "_select_to_files", builds)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    while (task := tasks.get()) is not None:
        n, cache_dir, objective, eval_fraction = task
        builds.update(dict.fromkeys(builds, 0))
        barriers[n].wait()  # all ranks of the round open the dataset at once
        try:
            cfg = PretrainConfig.from_flat(output_dir="unused", data_dir=data_dir, data_cache=cache_dir,
                                           max_seq_length=64, micro_batch=2, global_batch=2 * n, steps=1,
                                           objective=objective, eval_fraction=eval_fraction)
            source = CorpusSource(cfg, rank, n)
            source.start()
            results.put((rank, "ok", _digest(source.train.samples) if objective != "mlm" else
                         _digest(source.train.grouping.pieces), dict(builds)))
        except Exception as exc:  # noqa: BLE001 - reported to the test, which checks the line
            results.put((rank, type(exc).__name__, str(exc), dict(builds)))


@pytest.fixture(scope="module")
def fresh_data(prepared, tmp_path_factory):
    """A private copy of the prepared dataset without its DATA/cache folder: other tests build derived files into
    the shared one, which `locate` would then find instead of building them here."""
    import shutil

    out = tmp_path_factory.mktemp("fresh") / "data"
    shutil.copytree(prepared[0], out, ignore=shutil.ignore_patterns(cache.CACHE))
    return (out,)


@pytest.fixture(scope="module")
def ranks(fresh_data, tmp_path_factory):
    ctx = mp.get_context("spawn")
    barriers = {n: ctx.Barrier(n) for n in (2, WORLD)}
    tasks = [ctx.Queue() for _ in range(WORLD)]
    results = ctx.Queue()
    store = tmp_path_factory.mktemp("store") / "gloo"
    procs = [ctx.Process(target=_rank_main, args=(r, str(store), barriers, tasks[r], results, str(fresh_data[0])),
                         daemon=True) for r in range(WORLD)]
    for p in procs:
        p.start()

    def run_round(n, cache_dir, objective="mlm+nsp", eval_fraction=0.05):
        for r in range(n):
            tasks[r].put((n, str(cache_dir), objective, eval_fraction))
        return sorted(results.get(timeout=120) for _ in range(n))

    yield run_round
    for q in tasks:
        q.put(None)
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():  # a gloo teardown that lingers: the results are in
            p.kill()


def _clean(folder: Path) -> None:
    """No temporaries or refusals left behind in the cache folder."""
    left = [p.name for p in folder.iterdir() if ".tmp-" in p.name or p.name.endswith(".refused")]
    assert not left, left


@pytest.mark.parametrize("n", [2, WORLD])
def test_ranks_on_an_empty_cache_all_start(ranks, n, tmp_path):
    digests = set()
    for i in range(ROUNDS):
        objective = "mlm" if i % 5 == 4 else "mlm+nsp"  # the MLM-only path (document hashes) races the same way
        out = ranks(n, tmp_path / f"cache{i}", objective)
        assert [r for r, *_ in out] == list(range(n))
        assert all(status == "ok" for _, status, *_ in out), out
        assert len({d for _, _, d, _ in out}) == 1  # every rank maps the same files
        builds = {k: sum(b[k] for *_, b in out) for k in out[0][3]}
        assert builds == {"_build_index": 1, "_select_to_files": 0 if objective == "mlm" else 2}, (i, builds)
        digests.add((objective, out[0][2]))
        _clean(tmp_path / f"cache{i}")
    assert len(digests) == 2  # and every round builds the same maps


def test_a_refusal_reaches_every_rank_as_one_line(ranks, tmp_path):
    out = ranks(WORLD, tmp_path / "cache", eval_fraction=1e-9)  # a held-out split without documents
    lines = {(status, msg) for _, status, msg, _ in out}
    assert len(lines) == 1, lines
    status, msg = lines.pop()
    assert status == "DataError" and "\n" not in msg and "the held-out split has 0 of the dataset's" in msg
    assert "raise --eval-fraction" in msg
    assert sum(b["_build_index"] for *_, b in out) == 1  # refused once, by the builder of the held-out map


# ---- a builder killed mid-build -----------------------------------------------------------------------------------
def _stuck_builder(data_dir, cache_dir, signal_file):
    """Build the per-sentence index, stopping for good after the first shard (until killed)."""
    from bertforge.data import indexed

    read = indexed.read_shard_arrays

    def slow(prefix, header):
        Path(signal_file).touch()
        time.sleep(600)
        return read(prefix, header)

    indexed.read_shard_arrays = slow
    indexed.IndexedDataset(data_dir, cache_dir=cache_dir).sentence_index()


def _waiter(data_dir, cache_dir, results):
    from bertforge.data.pretraining import PretrainingDataset

    results.put(_digest(PretrainingDataset(data_dir, max_seq_length=64, split="all", cache_dir=cache_dir).samples))


def test_a_killed_builder_is_replaced_by_a_waiting_rank_and_a_rerun(fresh_data, tmp_path):
    from bertforge.data.pretraining import PretrainingDataset

    ctx = mp.get_context("spawn")
    data, folder, signal_file = str(fresh_data[0]), tmp_path / "cache", tmp_path / "building"
    builder = ctx.Process(target=_stuck_builder, args=(data, str(folder), str(signal_file)), daemon=True)
    builder.start()
    deadline = time.monotonic() + 60
    while not signal_file.exists():
        assert builder.is_alive() and time.monotonic() < deadline
        time.sleep(0.05)
    results = ctx.Queue()
    waiter = ctx.Process(target=_waiter, args=(data, str(folder), results), daemon=True)
    waiter.start()
    assert any(".tmp-" in p.name for p in folder.iterdir())  # the builder's half-written index
    time.sleep(1.0)
    assert waiter.is_alive()  # waiting on the lock, not building
    os.kill(builder.pid, signal.SIGKILL)
    builder.join()
    got = results.get(timeout=120)  # the waiter took the lock, cleared the leftovers and built
    waiter.join(timeout=30)
    _clean(folder)
    reference = PretrainingDataset(data, max_seq_length=64, split="all", cache_dir=tmp_path / "reference")
    assert got == _digest(reference.samples)

    # the same kill with nobody waiting: the next run (a rerun) repairs the cache
    rerun = tmp_path / "rerun"
    builder = ctx.Process(target=_stuck_builder, args=(data, str(rerun), str(signal_file)), daemon=True)
    signal_file.unlink()
    builder.start()
    while not signal_file.exists():
        assert builder.is_alive()
        time.sleep(0.05)
    os.kill(builder.pid, signal.SIGKILL)
    builder.join()
    again = PretrainingDataset(data, max_seq_length=64, split="all", cache_dir=rerun)
    assert _digest(again.samples) == got
    _clean(rerun)


def test_a_rank_waits_for_the_lock_at_most_its_timeout_and_names_the_holder(tmp_path):
    path = tmp_path / "map-x.npy"
    fd = os.open(cache.lock_path(path), os.O_RDWR | os.O_CREAT)
    os.write(fd, b"node7 pid 1234")
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX)  # another open file description: build_once must wait on it
    try:
        with pytest.raises(DataError, match=r"waited 0 s for node7 pid 1234 to build map-x.npy \(lock "
                                            r"\.map-x\.npy\.lock\)"):
            cache.build_once(path, lambda: path.write_bytes(b"x"), timeout_s=0.2)
    finally:
        os.close(fd)
    cache.build_once(path, lambda: path.write_bytes(b"x"))
    assert path.read_bytes() == b"x"
