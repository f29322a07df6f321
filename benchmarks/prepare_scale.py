"""Prepare at corpus scale: MB/s and peak memory against file size (one JSONL file of 50 / 200 / 600 MB made by
repeating and reshuffling the real Wikipedia extracts and Linux documentation) and against workers, the main
process's share of the CPU, and a training rank's private memory on each prepared dataset. JSON + a table.

    python benchmarks/prepare_scale.py [--sizes 50,200,600] [--workers 1,2] [--once 600:2] [--gz 50]
        [--scratch /tmp/bertforge-scale] [--json benchmarks/results/prepare_scale.json] [--vocab-size 30522]

Each prepare runs as `bertforge prepare` in its own process tree (TOKENIZERS_PARALLELISM=false, so a worker is one
core), sampled every 0.2 s with psutil: peak RSS of the whole tree, of the main process and of the largest worker.
The main process's CPU share is main_cpu_s / (main_cpu_s + workers_cpu_s) from prepare's own accounting (with
one worker everything runs in the main process). Rank memory: a process that opens the dataset the way a training
rank does (CorpusSource: sample maps into a cache folder, then 200 micro batches of 32 x 128), measured twice —
as the rank that builds the per-sentence index and maps, and as one that finds them cached — reading RssAnon
(private, anonymous memory: what grows with the corpus if anything is held in RAM) from /proc/self/status.
Corpus files live in --scratch (never in the repository) and are reused when present."""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bertforge.data.fetch import fetch  # noqa: E402
from bertforge.data.readers import read_documents  # noqa: E402
from bertforge.io import write_json  # noqa: E402


def corpus_texts() -> list[str]:
    """The documents of the Wikipedia extracts and the Linux documentation (reST), as plain text."""
    return [d.text for d in read_documents([fetch("wiki"), fetch("linux-doc")])]


def make_jsonl(texts: list[str], path: Path, mb: int, gz: bool = False) -> Path:
    """A JSONL file of `mb` MB: the documents repeated, each round in another seeded order."""
    if path.exists():
        return path
    import gzip

    target, written, rnd = mb * 10 ** 6, 0, 0
    tmp = path.with_name(path.name + ".part")
    with (gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1) if gz else open(tmp, "w", encoding="utf-8")) as f:
        while written < target:
            order = list(range(len(texts)))
            random.Random(rnd).shuffle(order)
            for i in order:
                line = json.dumps({"text": texts[i]}) + "\n"
                f.write(line)
                written += len(line.encode("utf-8"))
                if written >= target:
                    break
            rnd += 1
    tmp.rename(path)
    return path


def sample_tree(proc: psutil.Process, cpu: dict) -> tuple[int, int, int]:
    """(RSS of the whole tree, of the main process, of the largest child) in bytes; `cpu` {pid: CPU s} updated."""
    try:
        kids = proc.children(recursive=True)
        main = proc.memory_info().rss
        cpu[proc.pid] = sum(proc.cpu_times()[:2])
        rss = []
        for c in kids:
            rss.append(c.memory_info().rss)
            cpu[c.pid] = sum(c.cpu_times()[:2])
    except psutil.Error:
        return 0, 0, 0
    return main + sum(rss), main, max(rss, default=0)


def run_prepare(src: Path, tok: Path, out: Path, workers: int, shard_bytes: str, tree: Path = REPO) -> dict:
    """One `bertforge prepare` from the code in `tree` (another checkout = the baseline, run with its own flags)."""
    size_flags = ["--shard-bytes", shard_bytes, "--no-progress"] if tree == REPO else ["--docs-per-shard", "4096"]
    cmd = [sys.executable, "-m", "bertforge.cli", "prepare", str(src), "--tokenizer", str(tok), "--out", str(out),
           "--workers", str(workers), *size_flags]
    env = dict(os.environ, PYTHONPATH=str(tree), TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PYTHONDONTWRITEBYTECODE="1")
    t0 = time.perf_counter()
    proc = psutil.Popen(cmd, env=env, cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, cpu = [0, 0, 0], {}
    while proc.poll() is None:
        peak = [max(a, b) for a, b in zip(peak, sample_tree(proc, cpu))]
        time.sleep(0.2)
    out_text, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"prepare failed ({proc.returncode}): {err.strip()[-2000:]}")
    stats = json.loads(out_text.strip().splitlines()[-1])
    wall = time.perf_counter() - t0
    # sampled from outside (start-up included, the last 0.2 s missed): a cross-check of prepare's own accounting
    sampled_share = cpu.get(proc.pid, 0.0) / max(sum(cpu.values()), 1e-9)
    if tree != REPO:  # the baseline reports no CPU split of its own
        stats.update(main_cpu_s=cpu.get(proc.pid, 0.0), workers_cpu_s=sum(cpu.values()) - cpu.get(proc.pid, 0.0),
                     tasks=0, shards_written=stats.get("shards_written", 0))
    mb = src.stat().st_size / 1e6
    share = stats["main_cpu_s"] / max(stats["main_cpu_s"] + stats["workers_cpu_s"], 1e-9)
    return dict(file=src.name, file_mb=mb, workers=workers, seconds=stats["seconds"], wall_s=wall,
                mb_per_s=mb / stats["seconds"], text_mb_per_s=stats["text_bytes"] / 1e6 / stats["seconds"],
                tokens=stats["tokens"], tasks=stats["tasks"], shards=stats["shards_written"],
                peak_rss_mb=peak[0] / 1e6, main_rss_mb=peak[1] / 1e6, worker_rss_mb=peak[2] / 1e6,
                main_cpu_s=stats["main_cpu_s"], workers_cpu_s=stats["workers_cpu_s"], main_cpu_share=share,
                main_cpu_share_sampled=sampled_share, code="this tree" if tree == REPO else str(tree))


def rank_probe(data: str, tok: str, cache: str, batches: int) -> dict:
    """One training rank's memory on a prepared dataset (run in a fresh process: --probe)."""
    from bertforge.config.pretrain import PretrainConfig
    from bertforge.data.source import CorpusSource

    def status() -> dict:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines()
                      if ":" in line)
        return {k: int(fields[k].split()[0]) / 1024 for k in ("RssAnon", "VmHWM", "VmRSS")}  # MiB

    before = status()
    cfg = PretrainConfig.from_flat(data_dir=data, tokenizer=tok, output_dir=cache, data_cache=cache, seed=1,
                                   max_seq_length=128, micro_batch=32, global_batch=32)
    t = time.perf_counter()
    source = CorpusSource(cfg, 0, 1)
    source.start()
    start_s = time.perf_counter() - t
    after_start = status()
    for _ in range(batches):
        source.next_batch()
    end = status()
    return dict(start_s=start_s, rss_anon_before_mb=before["RssAnon"], rss_anon_after_start_mb=after_start["RssAnon"],
                rss_anon_mb=end["RssAnon"], peak_rss_mb=end["VmHWM"], train_samples=len(source.train),
                n_sentences=source.data.num_sentences, index_in_ram=source.data._index is not None)


def run_rank(data: Path, tok: Path, cache: Path, batches: int = 200) -> dict:
    import shutil

    shutil.rmtree(cache, ignore_errors=True)  # the builder must find nothing
    out = {}
    for role in ("builder", "cached"):  # the first run builds the index and maps; the second finds them
        proc = subprocess.run([sys.executable, __file__, "--probe", str(data), str(tok), str(cache), str(batches)],
                              env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"), cwd=REPO,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"rank probe failed: {proc.stderr[-2000:]}")
        out[role] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        print(json.dumps(rank_probe(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--table":  # print the tables of an earlier run's JSON
        print_table(json.loads(Path(sys.argv[2]).read_text()))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="50,200", help="file sizes in MB, each prepared with every --workers")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--once", default="600:2", help="SIZE:WORKERS runs done once (comma separated; '' = none)")
    ap.add_argument("--gz", default="50", help="sizes of .jsonl.gz files (one task: streamed by one worker)")
    ap.add_argument("--shard-bytes", default="16M")
    ap.add_argument("--vocab-size", type=int, default=30522)
    ap.add_argument("--scratch", default="/tmp/bertforge-scale")
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "prepare_scale.json"))
    ap.add_argument("--no-rank", action="store_true", help="skip the rank-memory probes")
    ap.add_argument("--append", action="store_true", help="add to the rows already in --json")
    ap.add_argument("--ranks-only", action="store_true", help="only the rank probes, on the datasets the runs of "
                    "--sizes left in --scratch (data<MB>-w<last of --workers>); implies --append")
    ap.add_argument("--baseline", default="", help="SIZE:WORKERS:TREE — also run the prepare of another checkout "
                    "(e.g. the code before streaming) on that file, same machine, same run")
    args = ap.parse_args()
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    if args.ranks_only:
        res = json.loads(Path(args.json).read_text())
        tok = scratch / f"tok{args.vocab_size}"
        for mb in [s for s in args.sizes.split(",") if s]:
            data = scratch / f"data{mb}-w{args.workers.split(',')[-1]}"
            res["rank_memory"][mb] = run_rank(data, tok, scratch / f"cache{mb}")
            write_json(args.json, res)
        print_table(res)
        return
    runs = [(int(s), int(w), False) for s in args.sizes.split(",") if s for w in args.workers.split(",")]
    runs += [(int(x.split(":")[0]), int(x.split(":")[1]), False) for x in args.once.split(",") if x]
    runs += [(int(s), 1, True) for s in args.gz.split(",") if s]
    texts = corpus_texts()
    res: dict = json.loads(Path(args.json).read_text()) if args.append and Path(args.json).exists() else {
                 "date": str(date.today()), "machine": platform.processor() or platform.machine(),
                 "cpu_count": os.cpu_count(), "load_average_start": os.getloadavg(),
                 "corpus_documents": len(texts), "corpus_text_mb": sum(len(t.encode()) for t in texts) / 1e6,
                 "shard_bytes": args.shard_bytes, "runs": [], "rank_memory": {}}
    res["date"] = str(date.today())
    tok = scratch / f"tok{args.vocab_size}"
    if not (tok / "tokenizer.json").exists():
        from bertforge.data.tokenizer import train_wordpiece

        train_wordpiece(iter(texts), tok, args.vocab_size, show_progress=False)
    for mb, workers, gz in runs:
        src = make_jsonl(texts, scratch / f"corpus{mb}.jsonl{'.gz' if gz else ''}", mb, gz)
        out = scratch / f"data{mb}{'gz' if gz else ''}-w{workers}"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        row = run_prepare(src, tok, out, workers, args.shard_bytes)
        res["runs"].append(row)
        print(f"{row['file']}: {workers} worker(s) {row['mb_per_s']:.2f} MB/s, peak RSS {row['peak_rss_mb']:.0f} MB "
              f"(main {row['main_rss_mb']:.0f}, worker {row['worker_rss_mb']:.0f}), main CPU "
              f"{100 * row['main_cpu_share']:.2f}%", flush=True)
        write_json(args.json, res)
        if not args.no_rank and not gz and str(mb) not in res["rank_memory"]:
            res["rank_memory"][str(mb)] = run_rank(out, tok, scratch / f"cache{mb}")
            r = res["rank_memory"][str(mb)]
            print(f"  rank on {mb} MB: RssAnon builder {r['builder']['rss_anon_mb']:.0f} MiB, cached "
                  f"{r['cached']['rss_anon_mb']:.0f} MiB", flush=True)
            write_json(args.json, res)
    if args.baseline:
        mb, workers, tree = args.baseline.split(":", 2)
        src = make_jsonl(texts, scratch / f"corpus{mb}.jsonl", int(mb))
        out = scratch / f"baseline{mb}-w{workers}"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        row = run_prepare(src, tok, out, int(workers), args.shard_bytes, Path(tree))
        res["baseline"] = row
        print(f"baseline {row['file']}: {workers} worker(s) {row['mb_per_s']:.2f} MB/s, peak RSS "
              f"{row['peak_rss_mb']:.0f} MB (main {row['main_rss_mb']:.0f})", flush=True)
    res["load_average_end"] = os.getloadavg()
    write_json(args.json, res)
    print_table(res)
    print(f"JSON: {args.json}")


def print_table(res: dict) -> None:
    """Markdown tables. 'MB per CPU-s' is file MB over the CPU seconds of main + workers: the per-core rate, which
    a shared machine does not distort the way it distorts wall-clock MB/s."""
    base = {(r["file"]): r for r in res["runs"] if r["workers"] == 1}
    rows = res["runs"] + ([dict(res["baseline"], file=res["baseline"]["file"] + " (before)")]
                          if "baseline" in res else [])
    print("\n| file | workers | MB/s (wall) | vs 1 worker | MB per CPU-s | peak RSS (tree / main / worker) MB "
          "| main CPU share |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        one = base.get(r["file"])
        ratio = f"{r['mb_per_s'] / one['mb_per_s']:.2f}x" if one and r is not one else "-"
        per_cpu = r["file_mb"] / max(r["main_cpu_s"] + r["workers_cpu_s"], 1e-9)
        share = f"{100 * r['main_cpu_share']:.2f}%" if r["workers"] > 1 else "100% (in-process)"
        print(f"| {r['file_mb']:.0f} MB {r['file'].split('.', 1)[1]} | {r['workers']} | {r['mb_per_s']:.2f} | {ratio} "
              f"| {per_cpu:.2f} | {r['peak_rss_mb']:.0f} / {r['main_rss_mb']:.0f} / {r['worker_rss_mb']:.0f} | "
              f"{share} |")
    if res["rank_memory"]:
        print("\n| corpus | sentences | rank RssAnon, builder (MiB) | rank RssAnon, maps cached (MiB) "
              "| peak RSS (MiB) |")
        print("| --- | --- | --- | --- | --- |")
        for mb, r in res["rank_memory"].items():
            print(f"| {mb} MB | {r['cached']['n_sentences']:,} | {r['builder']['rss_anon_mb']:.0f} | "
                  f"{r['cached']['rss_anon_mb']:.0f} | {r['cached']['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
