"""Sample construction of the pretraining objectives on a prepared corpus (the Wikipedia extracts): the SOP sample
map and the MLM-only document grouping in C++ against their references (ms, speedup), and the loader's masked
samples/s for NSP pairs, SOP pairs and full MLM-only sequences on one process. Writes JSON and prints a table.

    python benchmarks/objective_maps.py --data DATA --tokenizer TOK [--json benchmarks/results/objective_maps.json]
        [--max-seq-length 128] [--batch-size 256]"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import numpy as np

from bertforge.data.full_sentences import FullSentenceDataset, document_ranges
from bertforge.data.grouping import group_documents, group_documents_ref
from bertforge.data.indexed import IndexedDataset
from bertforge.data.pretraining import PretrainingCollator, PretrainingDataset
from bertforge.data.sample_map import (build_sample_map, build_sample_map_ref, build_sop_map, select_sentences,
                                    split_documents)
from bertforge.io import write_json


def best_of(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def loader_rate(ds, batch_size: int, batches: int) -> float:
    """Masked samples/s of dataset gather + host masking + layout (one process)."""
    collate = PretrainingCollator(ds.masker(0.15), pad_id=ds.special.pad_id)
    rng = np.random.default_rng(0)
    order = [rng.integers(0, len(ds), batch_size) for _ in range(batches)]
    collate(ds.__getitems__(order[0]))  # warm-up
    t = time.perf_counter()
    for idx in order:
        collate(ds.__getitems__(idx))
    return batch_size * batches / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--json", default="benchmarks/results/objective_maps.json")
    ap.add_argument("--max-seq-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--batches", type=int, default=20)
    args = ap.parse_args()
    seq = args.max_seq_length
    ds = IndexedDataset(args.data)
    docs = split_documents(ds.doc_hashes, "all", 0)
    sentences = select_sentences(ds, docs)
    _, doc_len = document_ranges(ds, docs)
    res: dict = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
                 "cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "docs": len(docs),
                 "tokens": ds.num_tokens, "max_seq_length": seq}
    rows = []
    for name, fast, ref in (
            ("NSP sample map", lambda: build_sample_map(*sentences, seq, 0.1, 0.5, 0),
             lambda: build_sample_map_ref(*sentences, seq, 0.1, 0.5, 0)),
            ("SOP sample map", lambda: build_sop_map(*sentences, seq, 0.1, 0.5, 0),
             lambda: build_sample_map_ref(*sentences, seq, 0.1, 0.5, 0, sop=True)),
            ("MLM-only grouping", lambda: group_documents(doc_len, seq - 2),
             lambda: group_documents_ref(doc_len, seq - 2))):
        t_fast, out = best_of(fast, 5)
        t_ref, _ = best_of(ref, 1)
        n = len(out.samples) if hasattr(out, "samples") else out.num_blocks
        res[name] = {"cpp_ms": t_fast * 1e3, "reference_ms": t_ref * 1e3, "speedup": t_ref / t_fast, "samples": n}
        rows.append(f"| {name} | {n:,} | {t_fast * 1e3:.2f} ms | {t_ref * 1e3:.1f} ms | {t_ref / t_fast:.0f}x |")
    kw = dict(max_seq_length=seq, split="all", tokenizer=args.tokenizer)
    loaders = {"NSP pairs": PretrainingDataset(args.data, **kw), "SOP pairs": PretrainingDataset(args.data,
                                                                                               pairing="sop", **kw),
               "MLM-only full sequences": FullSentenceDataset(args.data, **kw)}
    for name, dataset in loaders.items():
        rate = loader_rate(dataset, args.batch_size, args.batches)
        res[f"loader {name}"] = {"samples_per_s": rate}
        rows.append(f"| loader, {name} | | {rate:,.0f} masked samples/s | | |")
    write_json(args.json, res)
    print(f"{res['docs']:,} documents, {res['tokens']:,} tokens, max_seq_length {seq} ({res['date']}, "
          f"{res['cpu_count']} cores, load average {res['load_average'][0]:.1f})")
    print("| step | samples | C++ | reference | speedup |\n| --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
