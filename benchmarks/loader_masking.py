"""Host cost of the training batches `bertforge pretrain` consumes (engine/data/source.py): samples per second
that one thread builds with host masking (numpy 80/10/10 in the collator) and without it (--masking device: the
GPU masks), padded+unpadded and packed. The question: can the loader keep a GPU step fed — BERT-base at
6,000 sequences/s needs 6,000 samples/s from the prefetch thread (engine/data/prefetch.py).

Usage: python benchmarks/loader_masking.py DATA_DIR TOKENIZER_DIR [--max-seq-length 128] [--batch 256] [--seconds 3]
(DATA_DIR from `bertforge prepare`, e.g. runs/quickstart/data from scripts/quickstart.sh or scripts/gpu_carry.sh).
Output: a table and --out JSON."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bertforge.config.pretrain import PretrainConfig  # noqa: E402
from bertforge.data.source import CorpusSource  # noqa: E402
from bertforge.io import write_json  # noqa: E402


def samples_per_s(source: CorpusSource, batch: int, seconds: float) -> float:
    source.batch_at(0)  # warm-up: maps the sample map, first-touch pages
    n, position, t0 = 0, 1, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        source.batch_at(position)
        position += 1
        n += batch
    return n / (time.perf_counter() - t0)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir")
    p.add_argument("tokenizer_dir")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--out", default="benchmarks/results/loader_masking.json")
    args = p.parse_args(argv)
    rows = []
    for pack in (False, True):
        for masking in ("host", "device"):
            cfg = PretrainConfig.from_flat(output_dir="unused", data_dir=args.data_dir, tokenizer=args.tokenizer_dir,
                                           max_seq_length=args.max_seq_length, micro_batch=args.batch,
                                           global_batch=args.batch, steps=1, masking=masking, unpadded=True,
                                           pack=pack)
            source = CorpusSource(cfg, 0, 1)
            source.start()
            rows.append({"pack": pack, "masking": masking,
                         "samples_per_s": samples_per_s(source, args.batch, args.seconds)})
    result = {"max_seq_length": args.max_seq_length, "batch": args.batch, "threads": 1, "rows": rows}
    write_json(args.out, result)
    print(f"training batches built by one thread, S={args.max_seq_length}, B={args.batch}")
    print(f"{'layout':<18} {'masking':<8} {'samples/s':>10}")
    for r in rows:
        print(f"{'packed' if r['pack'] else 'padded + unpadded':<18} {r['masking']:<8} {r['samples_per_s']:>10.0f}")
    return result


if __name__ == "__main__":
    main()
