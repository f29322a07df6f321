"""Data-pipeline throughput on the full Wikipedia extracts (`bertforge data fetch wiki`): prepare (MB/s of text),
the NSP sample map in C++ against the pure-Python reference (samples/s, speedup; target >= 20x), and the
pretraining loader (masked 128-token samples/s on one process = one core; target >= 20,000). Writes JSON and prints a table.

    python benchmarks/data_pipeline.py [--json data_pipeline.json] [--vocab-size 30522] [--workers N]
        [--max-seq-length 128] [--batch-size 256]"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.config.pretrain import PretrainConfig
from engine.data.fetch import fetch
from engine.data.indexed import IndexedDataset
from engine.data.prepare import prepare
from engine.data.sample_map import build_sample_map, build_sample_map_ref, select_sentences, split_documents
from engine.data.source import CorpusSource
from engine.data.tokenizer import train_wordpiece
from engine.io import write_json

TARGET_MAP_SPEEDUP = 20.0
TARGET_LOADER_SAMPLES_PER_CORE = 20_000


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default="data_pipeline.json")
    ap.add_argument("--vocab-size", type=int, default=30522)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--max-seq-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args()
    wiki = fetch("wiki")
    res: dict = {"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                 "corpus": str(wiki), "corpus_mb": wiki.stat().st_size / 1e6}
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir, data_dir = Path(tmp) / "tok", Path(tmp) / "data"
        t = time.perf_counter()
        train_wordpiece([wiki], tok_dir, args.vocab_size, show_progress=False)
        res["tokenizer_train_s"] = time.perf_counter() - t
        for w in sorted({1, args.workers}):
            out = data_dir if w == args.workers else Path(tmp) / f"data_w{w}"
            st = prepare([wiki], tok_dir, out, workers=w, docs_per_shard=1024, progress=False)
            res[f"prepare_workers{w}"] = {"seconds": st.seconds, "text_mb_per_s": st.text_bytes / 1e6 / st.seconds,
                                          "docs_per_s": st.documents / st.seconds,
                                          "tokens_per_s": st.tokens / st.seconds}
        ds = IndexedDataset(data_dir)
        sel = select_sentences(ds, split_documents(ds.doc_hashes, "all", 0.0))
        cpp_s, cpp = best_of(lambda: build_sample_map(*sel, args.max_seq_length, 0.1, 0.5, 0), 5)
        ref_s, ref = best_of(lambda: build_sample_map_ref(*sel, args.max_seq_length, 0.1, 0.5, 0), 1)
        assert np.array_equal(cpp.samples, ref.samples), "C++ map differs from the reference"
        n = len(cpp.samples)
        res["sample_map"] = {"samples": n, "sentences": len(sel[0]), "cpp_s": cpp_s, "python_ref_s": ref_s,
                             "cpp_samples_per_s": n / cpp_s, "python_samples_per_s": n / ref_s,
                             "speedup": ref_s / cpp_s, "target_speedup": TARGET_MAP_SPEEDUP}
        cfg = PretrainConfig.from_flat(data_dir=str(data_dir), tokenizer=str(tok_dir), seed=0,
                                       micro_batch=args.batch_size, global_batch=args.batch_size,
                                       max_seq_length=args.max_seq_length)
        source = CorpusSource(cfg, 0, 1)
        source.start()
        source.next_batch()  # warm-up: maps the sample map, first-touch pages
        samples, t = 0, time.perf_counter()
        while time.perf_counter() - t < 3.0:
            samples += source.next_batch().num_samples
        dt = time.perf_counter() - t
        res["loader"] = {"samples_per_s_one_core": samples / dt, "max_seq_length": args.max_seq_length,
                         "batch_size": args.batch_size, "threads": 1,
                         "target_samples_per_s": TARGET_LOADER_SAMPLES_PER_CORE}
    res["pass"] = {"map_speedup": res["sample_map"]["speedup"] >= TARGET_MAP_SPEEDUP,
                   "loader": res["loader"]["samples_per_s_one_core"] >= TARGET_LOADER_SAMPLES_PER_CORE}
    write_json(args.json, res)
    rows = [(f"prepare, {k[15:]} worker(s)", f"{v['text_mb_per_s']:.2f} MB/s text, {v['docs_per_s']:.0f} docs/s, "
             f"{v['tokens_per_s'] / 1e3:.0f}k tokens/s") for k, v in res.items() if k.startswith("prepare_workers")]
    m = res["sample_map"]
    rows += [("sample map C++", f"{m['cpp_s'] * 1e3:.1f} ms, {m['cpp_samples_per_s'] / 1e6:.2f}M samples/s"),
             ("sample map Python ref", f"{m['python_ref_s'] * 1e3:.0f} ms, {m['python_samples_per_s']:.0f} samples/s"),
             ("C++ speedup", f"{m['speedup']:.0f}x (target >= {TARGET_MAP_SPEEDUP:.0f}x) "
              f"{'PASS' if res['pass']['map_speedup'] else 'FAIL'}"),
             ("loader (1 core)", f"{res['loader']['samples_per_s_one_core']:.0f} masked {args.max_seq_length}-token "
              f"samples/s (target >= {TARGET_LOADER_SAMPLES_PER_CORE}) {'PASS' if res['pass']['loader'] else 'FAIL'}")]
    width = max(len(r[0]) for r in rows)
    print(f"data pipeline on {res['corpus_mb']:.1f} MB Wikipedia extracts, {m['samples']} samples "
          f"({m['sentences']} sentences), {res['cpu_count']} CPUs")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print(f"JSON: {args.json}")


if __name__ == "__main__":
    main()
