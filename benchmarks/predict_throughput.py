"""Question: how many texts a second does `bertforge predict` classify, against a plain Hugging Face forward loop over
the same texts, model, batch size and maximum length? Same-run ratios on the CPU or a GPU.

Task: sequence classification (2 labels) of synthetic texts: pseudo-words (random letters, Zipf frequencies), word
counts uniform in [L/6, 2L/3] (about [L/4, L] tokens; the longest truncated at L), with a WordPiece tokenizer trained
on them (bertforge.data.tokenizer.train_wordpiece, 4,096 entries), or --tokenizer DIR's own vocabulary words; the same
texts for every variant; a randomly initialised model of the preset with the tokenizer's vocabulary, exported once as
a Hugging Face directory (tokenizer included) that both sides load.
  hf        transformers' fast tokenizer (`tokenizer(batch, padding=True, truncation=True, max_length=L)`) and
            BertForSequenceClassification (SDPA attention) under torch.no_grad, batches in input order, softmax
            probabilities to Python lists: the plain loop users write
  ours      the core of `bertforge predict` (bertforge.finetuning.predict.classify_rows): tokenizing, batches sorted
            by length, unpadded, the model in eval mode, one output row (label + probabilities) per text
  ours-repad  `ours` with the CPU attention re-padding each unpadded batch to (B, max_seqlen) and masking
            (bertforge.kernels.reference.VARLEN_PER_SEQUENCE_ON_CPU = False)
  ours-full-last-layer  `ours` with the last encoder layer on every token instead of the [CLS] rows only
            (ModelConfig.last_layer_subset)
  ours-file the whole `bertforge.predict(model, csv, out=jsonl)` call: loading the model, reading the CSV, writing
            the JSONL (its texts/s includes the model load, ~1 s)
Each variant runs in its own process; each times --passes passes over the texts after one untimed pass and keeps the
median (wall and process CPU time). --repeats R runs the variants R times interleaved (order rotating) and the
summary gives the median over rounds of each round's ratio to hf, with the 1-minute load average.

    python benchmarks/predict_throughput.py --shape minilm-l6 --length 128 --batch 64 --texts 512 --threads 1 \
        --repeats 3"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from _timing import run_child  # noqa: E402  (benchmarks/: the script's own folder)

VARIANTS = ("hf", "ours", "ours-repad", "ours-full-last-layer", "ours-file")


def make_words(n: int = 3000, seed: int = 0) -> list[str]:
    """n distinct pseudo-words of 2-10 lowercase letters."""
    rng = random.Random(seed)
    words: dict[str, None] = {}
    while len(words) < n:
        words["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))] = None
    return list(words)


def make_texts(n: int, length: int, words: list[str], seed: int = 1) -> list[str]:
    """n texts of `words` drawn with Zipf weights (1 / rank), word counts uniform in [L/6, 2L/3]."""
    rng = random.Random(seed)
    weights = [1.0 / (i + 1) for i in range(len(words))]
    return [" ".join(rng.choices(words, weights, k=rng.randint(max(1, length // 6), max(1, 2 * length // 3))))
            for _ in range(n)]


def tokenizer_and_words(tokenizer: str, out_dir: Path) -> tuple[Path, list[str]]:
    """(tokenizer directory, words of the texts): --tokenizer's whole vocabulary words, or pseudo-words and a
    WordPiece tokenizer trained on them in out_dir."""
    if tokenizer:
        vocab = (Path(tokenizer) / "vocab.txt").read_text(encoding="utf-8").split()
        return Path(tokenizer), [w for w in vocab if w.isalpha() and not w.startswith("##")]
    from bertforge.data.tokenizer import train_wordpiece

    words = make_words()
    train_wordpiece(make_texts(4000, 64, words, seed=2), out_dir, vocab_size=4096, show_progress=False)
    return out_dir, words


def make_model(directory: Path, shape: str, length: int, tokenizer_dir: Path) -> Path:
    """A randomly initialised 2-label classifier of `shape` with the tokenizer's vocabulary, as a HF directory."""
    import torch

    from bertforge.config import preset
    from bertforge.data.tokenizer import load_tokenizer
    from bertforge.heads import BertForSequenceClassification
    from bertforge.hf import export_hf

    torch.manual_seed(0)
    cfg = preset(shape, vocab_size=load_tokenizer(tokenizer_dir).get_vocab_size())
    model = BertForSequenceClassification(cfg, 2).eval()
    return export_hf(model, directory, tokenizer_dir, id2label={0: "neg", 1: "pos"}, max_length=length)


def run_hf(model_dir: Path, texts: list[str], batch: int, length: int) -> list:
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.BertForSequenceClassification.from_pretrained(model_dir, attn_implementation="sdpa").eval()

    def one_pass():
        out = []
        with torch.no_grad():
            for k in range(0, len(texts), batch):
                enc = tok(texts[k:k + batch], padding=True, truncation=True, max_length=length, return_tensors="pt")
                out.extend(model(**enc).logits.float().softmax(-1).tolist())
        return out
    return one_pass


def run_ours(model_dir: Path, texts: list[str], batch: int, length: int, variant: str):
    from bertforge.finetuning import data_classify as dc
    from bertforge.finetuning.predict import Runner, classify_rows, load_finetuned
    from bertforge.kernels import reference

    if variant == "ours-repad":
        reference.VARLEN_PER_SEQUENCE_ON_CPU = False
    ft = load_finetuned(model_dir, max_seq_length=length)
    if variant == "ours-full-last-layer":  # load_finetuned runs a [CLS] classifier's last layer on [CLS] only
        ft.model.bert.config.last_layer_subset = False
    run = Runner(ft, micro_batch=batch)
    examples = [dc.Example(t, None, None, "texts", i + 2) for i, t in enumerate(texts)]
    return lambda: classify_rows(run, examples)


def run_file(model_dir: Path, texts: list[str], batch: int, length: int, tmp: Path):
    import bertforge

    src = tmp / "texts.csv"
    with open(src, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text"])
        writer.writerows([t] for t in texts)
    return lambda: bertforge.predict(model_dir, src, out=str(tmp / "out.jsonl"), micro_batch=batch,
                                     max_seq_length=length)


def measure(variant: str, model_dir: Path, batch: int, length: int, passes: int, threads: int) -> dict:
    import torch

    texts = json.loads((model_dir.parent / "texts.json").read_text(encoding="utf-8"))

    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        if variant == "hf":
            fn = run_hf(model_dir, texts, batch, length)
        elif variant == "ours-file":
            fn = run_file(model_dir, texts, batch, length, Path(tmp))
        else:
            fn = run_ours(model_dir, texts, batch, length, variant)
        n = fn()  # untimed pass: allocator, first-call costs
        n = n if isinstance(n, int) else len(n)  # ours-file returns the number of lines written
        wall, cpu = [], []
        for _ in range(passes):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    w, c = statistics.median(wall), statistics.median(cpu)
    return {"variant": variant, "outputs": n, "pass_s": w, "cpu_pass_s": c, "texts_per_s": len(texts) / w,
            "cpu_texts_per_s": len(texts) / c, "passes": passes}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--shape", default="tiny", help="model preset (tiny, minilm-l6, bert-base, ...)")
    p.add_argument("--length", type=int, default=128, help="maximum tokens per text (both sides truncate there)")
    p.add_argument("--batch", type=int, default=64, help="texts per forward (bertforge predict's --micro-batch)")
    p.add_argument("--texts", type=int, default=512, help="synthetic texts per pass (the same for every variant)")
    p.add_argument("--passes", type=int, default=3, help="timed passes over the texts per process (median)")
    p.add_argument("--repeats", type=int, default=1, help="rounds of all variants, interleaved")
    p.add_argument("--variants", default="hf,ours", help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    p.add_argument("--tokenizer", default="", help="a tokenizer directory (vocab.txt + tokenizer.json) whose words "
                   "make the texts (e.g. runs/quickstart/tok); default: pseudo-words and a tokenizer trained on them")
    p.add_argument("--timeout", type=float, default=900, help="seconds per measurement process")
    p.add_argument("--out", default="benchmarks/results/predict_throughput.json")
    p.add_argument("--one", nargs=2, metavar=("VARIANT", "MODEL_DIR"), help=argparse.SUPPRESS)
    return p


def main(argv=None) -> dict | None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.one:
        variant, model_dir = args.one
        print("RESULT " + json.dumps(measure(variant, Path(model_dir), args.batch, args.length, args.passes,
                                             args.threads)))
        return None
    variants = [v for v in args.variants.split(",") if v]
    if set(variants) - set(VARIANTS) or args.repeats < 1:
        parser.error(f"variants: {', '.join(VARIANTS)}; --repeats >= 1")
    import torch

    from bertforge.io import write_json

    result = {"device": "cpu", "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "shape": args.shape,
              "length": args.length, "batch": args.batch, "texts": args.texts, "threads": args.threads or
              torch.get_num_threads(), "cpus": os.cpu_count(), "rows": [], "summary": []}
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    print(f"{'round':>5} {'variant':<20} {'texts/s':>9} {'cpu texts/s':>12} {'x hf':>6} {'load':>5}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir, words = tokenizer_and_words(args.tokenizer, Path(tmp) / "tok")
        texts = make_texts(args.texts, args.length, words)
        (Path(tmp) / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
        model_dir = make_model(Path(tmp) / "model", args.shape, args.length, tok_dir)
        result["tokens_per_text"] = _mean_tokens(model_dir, texts, args.length)
        print(f"{args.texts} texts, {result['tokens_per_text']:.1f} tokens each on average (at most {args.length})")
        for rnd in range(args.repeats):
            k = rnd % len(variants)
            for variant in variants[k:] + variants[:k]:
                r = _child(variant, model_dir, args, env)
                r.update(round=rnd)
                result["rows"].append(r)
                _ratios(result)
                write_json(Path(args.out), result)
                print(f"{rnd:>5} {variant:<20} " + (f"ERROR {r['error']}" if "error" in r else
                      f"{r['texts_per_s']:>9.1f} {r['cpu_texts_per_s']:>12.1f} "
                      f"{r.get('speedup_vs_hf', float('nan')):>6.2f} {r['load_avg']:>5.1f}"), flush=True)
    print(f"\nsummary (median over rounds of the same-round ratio; a row printed before its round's hf row shows "
          f"nan above)\n{'variant':<20} {'texts/s':>9} "
          f"{'x hf wall':>10} {'x hf cpu':>9}")
    for s in result["summary"]:
        print(f"{s['variant']:<20} {s['texts_per_s']:>9.1f} {s.get('speedup_vs_hf', float('nan')):>10.2f} "
              f"{s.get('cpu_speedup_vs_hf', float('nan')):>9.2f}")
    return result


def _child(variant: str, model_dir: Path, args, env: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", variant, str(model_dir), "--length",
           str(args.length), "--batch", str(args.batch), "--texts", str(args.texts), "--passes", str(args.passes),
           "--threads", str(args.threads)]
    r = run_child(cmd, env, args.timeout)
    r.update(variant=variant)
    return r


def _mean_tokens(model_dir: Path, texts: list[str], length: int) -> float:
    from bertforge.data.tokenizer import load_tokenizer

    tok = load_tokenizer(model_dir)
    tok.enable_truncation(max_length=length)
    return statistics.mean(len(e.ids) for e in tok.encode_batch(texts))


def _ratios(result: dict) -> None:
    rows = result["rows"]
    for r in rows:
        base = next((x for x in rows if x["variant"] == "hf" and x["round"] == r["round"] and "pass_s" in x), None)
        if base and "pass_s" in r:
            r["speedup_vs_hf"] = base["pass_s"] / r["pass_s"]
            r["cpu_speedup_vs_hf"] = base["cpu_pass_s"] / r["cpu_pass_s"]
    result["summary"] = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant and "pass_s" in r]
        if not mine:
            continue
        s = {"variant": variant, "rounds": len(mine), "texts_per_s": statistics.median(r["texts_per_s"] for r in mine),
             "load_min": min(r["load_avg"] for r in mine), "load_max": max(r["load_avg"] for r in mine)}
        for key in ("speedup_vs_hf", "cpu_speedup_vs_hf"):
            vals = [r[key] for r in mine if key in r]
            if vals:
                s[key] = statistics.median(vals)
        result["summary"].append(s)


if __name__ == "__main__":
    main()
