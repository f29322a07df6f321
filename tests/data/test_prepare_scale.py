"""Corpus-scale behaviour of prepare and of the data path of training: Parquet input equals JSONL, a killed worker
ends prepare with one line and the rerun completes identically, `--part` halves form the whole dataset, more shards
than the open-file limit train, a read-only data folder trains."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from bertforge.config.pretrain import PretrainConfig
from bertforge.data.indexed import IndexedDataset
from bertforge.data.prepare import prepare
from bertforge.data.readers import read_documents
from bertforge.data.source import CorpusSource
from bertforge.errors import DataError

REPO = Path(__file__).resolve().parents[2]
TRAIN = Path(__file__).with_name("_train_steps.py")


def env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")


def texts_of(wiki_slice, n=None):
    return [d.text for d in read_documents([wiki_slice])][:n]


def write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def dataset_content(folder):
    """Everything a dataset says, independent of how it is cut into shards."""
    ds = IndexedDataset(folder, cache_dir=Path(folder) / "cache")
    return dict(tokens=ds.gather(np.arange(ds.num_tokens)), starts=np.asarray(ds.sentence_starts),
                lengths=np.asarray(ds.sentence_lengths), docs=np.asarray(ds.doc_offsets),
                hashes=np.asarray(ds.doc_hashes), unigram=ds.unigram_counts())


def same_files(a: Path, b: Path, names):
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def shard_files(folder):
    return sorted(p.name for p in folder.glob("shard_*"))


def test_parquet_gives_the_same_dataset_as_jsonl(wiki_slice, tokenizer_dir, tmp_path):
    texts = texts_of(wiki_slice)
    write_jsonl(tmp_path / "c.jsonl", texts)
    pq.write_table(pa.table({"text": texts}), tmp_path / "c.parquet", row_group_size=100)
    for shard_bytes in (4 << 20, 100_000):
        a = prepare([tmp_path / "c.jsonl"], tokenizer_dir, tmp_path / f"j{shard_bytes}", shard_bytes=shard_bytes,
                    progress=False)
        b = prepare([tmp_path / "c.parquet"], tokenizer_dir, tmp_path / f"p{shard_bytes}", shard_bytes=shard_bytes,
                    workers=2, progress=False)
        assert a.documents == b.documents == len(texts) and a.tokens == b.tokens
        if shard_bytes > 2 << 20:  # one task each: the very same files
            names = shard_files(tmp_path / f"j{shard_bytes}")
            assert names == shard_files(tmp_path / f"p{shard_bytes}") and len(names) == 2
            same_files(tmp_path / f"j{shard_bytes}", tmp_path / f"p{shard_bytes}", names + ["unigram.npy"])
        ja, pa_ = dataset_content(tmp_path / f"j{shard_bytes}"), dataset_content(tmp_path / f"p{shard_bytes}")
        for key in ja:
            assert np.array_equal(ja[key], pa_[key]), key


def _workers_of(proc: subprocess.Popen) -> list[psutil.Process]:
    kids = psutil.Process(proc.pid).children(recursive=True)
    return [k for k in kids if "resource_tracker" not in " ".join(k.cmdline())]


def test_killed_worker_ends_prepare_in_one_line_and_the_rerun_completes(wiki_slice, tokenizer_dir, tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", texts_of(wiki_slice) * 4)  # ~5 MB, ~80 tasks
    cmd = [sys.executable, "-m", "bertforge.cli", "prepare", str(src), "--tokenizer", str(tokenizer_dir), "--out",
           str(tmp_path / "out"), "--workers", "2", "--shard-bytes", "64K", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "out").glob("shard_*.idx")):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no shard after 120 s"
        time.sleep(0.02)
    victim = _workers_of(proc)[0]
    victim.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=120)  # no hang: the pool notices the dead worker
    assert proc.returncode == 2, (out, err)  # a user error: one line
    # --no-progress still gives plain progress lines (every command alike); the failure itself is one line, the last
    lines = [line for line in err.strip().splitlines() if not line.startswith("prepare: ")]
    assert err.strip().splitlines()[-1] == lines[-1]
    assert len(lines) == 1 and re.match(rf"bertforge prepare: error: {tmp_path / 'out'}/shard_\d{{6}}_\d{{4}}: ", lines[0]), err
    assert f"worker process {victim.pid} was killed by SIGKILL" in lines[0] and "run the same command" in lines[0]
    assert not (tmp_path / "out" / "meta.json").exists()
    done = len(list((tmp_path / "out").glob("shard_*.idx")))

    rerun = subprocess.run(cmd, env=env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    stats = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert stats["complete"] and stats["shards_skipped"] >= done > 0
    clean = prepare([src], tokenizer_dir, tmp_path / "clean", shard_bytes=64 << 10, progress=False)
    names = shard_files(tmp_path / "clean")
    assert names == shard_files(tmp_path / "out") and stats["tokens"] == clean.tokens
    same_files(tmp_path / "clean", tmp_path / "out", names + ["unigram.npy"])
    assert not list((tmp_path / "out").glob(".*tmp*"))


def _source(data_dir, tokenizer_dir, cache):
    cfg = PretrainConfig.from_flat(data_dir=str(data_dir), tokenizer=str(tokenizer_dir), output_dir=str(cache),
                                   max_seq_length=64, micro_batch=8, global_batch=8, eval_fraction=0.1, seed=9)
    source = CorpusSource(cfg, 0, 1)
    source.start()
    return source


def test_two_parts_prepared_separately_train_as_the_whole(wiki_slice, tokenizer_dir, tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", texts_of(wiki_slice, 1200))
    whole = prepare([src], tokenizer_dir, tmp_path / "whole", shard_bytes=40_000, progress=False)
    first = prepare([src], tokenizer_dir, tmp_path / "parts", shard_bytes=40_000, part="0/2", progress=False)
    assert not first.complete and 0 < first.tasks < whole.tasks
    with pytest.raises(DataError, match=r"parts 1 of 2 are not prepared yet"):
        IndexedDataset(tmp_path / "parts")
    second = prepare([src], tokenizer_dir, tmp_path / "parts", shard_bytes=40_000, part="1/2", workers=2,
                     progress=False)
    assert second.complete and first.tasks + second.tasks == whole.tasks
    assert first.tokens + second.tokens == whole.tokens
    names = shard_files(tmp_path / "whole")
    assert names == shard_files(tmp_path / "parts")
    same_files(tmp_path / "whole", tmp_path / "parts", names + ["unigram.npy"])
    metas = [json.loads((tmp_path / x / "meta.json").read_text()) for x in ("whole", "parts")]
    assert metas[0]["shards"] == metas[1]["shards"] and metas[0]["dataset_id"] == metas[1]["dataset_id"]
    a = _source(tmp_path / "whole", tokenizer_dir, tmp_path / "run_a")
    b = _source(tmp_path / "parts", tokenizer_dir, tmp_path / "run_b")
    assert len(a.train) == len(b.train) > 100
    for _ in range(3):
        x, y = a.next_batch(), b.next_batch()
        assert torch.equal(x.input_ids, y.input_ids) and torch.equal(x.labels, y.labels)
    assert torch.equal(next(a.held_out_batches(8)).input_ids, next(b.held_out_batches(8)).input_ids)


def test_a_part_from_other_settings_is_refused(wiki_slice, tokenizer_dir, tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", texts_of(wiki_slice, 400))
    prepare([src], tokenizer_dir, tmp_path / "parts", shard_bytes=40_000, part="0/2", progress=False)
    with pytest.raises(DataError, match=r"part-00000-of-00002.json: this part was prepared from other inputs"):
        prepare([src], tokenizer_dir, tmp_path / "parts", shard_bytes=30_000, part="1/2", progress=False)


def _train(data, tokenizer, run, *args, **kw) -> dict:
    proc = subprocess.run([sys.executable, str(TRAIN), str(data), str(tokenizer), str(run), *args], env=env_with(**kw),
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def env_with(**extra) -> dict:
    return dict(env(), **{k: str(v) for k, v in extra.items()})


def test_more_shards_than_the_open_file_limit_train(wiki_slice, tokenizer_dir, tmp_path):
    stats = prepare([wiki_slice], tokenizer_dir, tmp_path / "many", shard_bytes=800, progress=False)
    n_shards = len(json.loads((tmp_path / "many" / "meta.json").read_text())["shards"])
    assert n_shards > 1000
    res = _train(tmp_path / "many", tokenizer_dir, tmp_path / "run", "--nofile", "200")
    assert all(np.isfinite(res["losses"])) and np.isfinite(res["eval_loss"]) and res["fds"] < 200
    assert stats.documents == 2500


@pytest.fixture
def world_readable(tmp_path):
    """A folder every user can enter (pytest's own are private), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="bertforge-ro-"))
    folder.chmod(0o755)
    yield folder
    for p in folder.rglob("*"):
        if p.is_dir():
            p.chmod(0o755)
    shutil.rmtree(folder)


def test_a_read_only_data_folder_trains(prepared, tokenizer_dir, world_readable):
    data, tok, run = world_readable / "data", world_readable / "tok", world_readable / "run"
    shutil.copytree(prepared[0], data, ignore=shutil.ignore_patterns("cache"))
    shutil.copytree(tokenizer_dir, tok)
    for p in [tok, *tok.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    run.mkdir(mode=0o777)
    run.chmod(0o777)
    before = {p: p.stat().st_mtime_ns for p in data.rglob("*")}
    for p in [*data.rglob("*"), data]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    args = ["--user", "65534"] if os.geteuid() == 0 else []  # root writes anywhere: train as nobody
    res = _train(data, tok, run, *args, **({"HOME": str(run)} if args else {}))
    assert all(np.isfinite(res["losses"])) and res["cache_dir"] == str(run / "data_cache")
    assert {p: p.stat().st_mtime_ns for p in data.rglob("*")} == before  # nothing written into the data folder
    assert len(list((run / "data_cache").glob("map-*.npy"))) == 2 and list((run / "data_cache").glob("index-*"))
