"""Which pretraining objective learns the best MLM features for the same compute: mlm+nsp (BERT), mlm+sop (ALBERT)
and mlm alone on full sequences (RoBERTa's FULL-SENTENCES), each trained from the same initial seed for the same
number of steps on (nearly) the same number of tokens, on a prepared corpus (the Wikipedia extracts).

Tokens per step are matched by the micro batch: an objective's micro batch = round(--tokens-per-step / its mean
training-sample length) (pairs are shorter than the full MLM-only sequences). Every trained model is then scored on
the same two held-out sets with the same masks (15%, 80/10/10, fixed seed): the held-out documents as MLM-only full
sequences, and as the NSP pairs of the default objective; the unigram baseline (always the most frequent masked
token of that set) beside them. The sentence heads are scored on the held-out NSP and SOP pairs (both ways: ALBERT
reports that NSP-trained heads fail on SOP, while SOP-trained ones do well on NSP). Writes JSON and prints a table.

    python benchmarks/objectives.py --data DATA --tokenizer TOK --out runs/objectives [--steps 400]
        [--tokens-per-step 6144] [--lr 2e-3] [--warmup-steps 40] [--threads 2] [--json objectives.json]"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from bertforge.config.pretrain import OBJECTIVES, PretrainConfig
from bertforge.data.full_sentences import FullSentenceDataset
from bertforge.data.pretraining import PretrainingCollator, PretrainingDataset
from bertforge.data.source import EVAL_EPOCH
from bertforge.io import write_json
from bertforge.training.weights import load_model_from_checkpoint

EVAL_SEED = 4321  # masks of the common held-out sets


def mean_sample_length(data: str, tokenizer: str, objective: str, seq: int, seed: int, eval_fraction: float) -> float:
    ds = dataset(data, tokenizer, objective, seq, "train", seed, eval_fraction)
    if isinstance(ds, FullSentenceDataset):
        return float(ds.doc_len.sum() + len(ds.doc_len) - 1) / len(ds) + 2  # units per sequence + [CLS], [SEP]
    s = np.asarray(ds.samples)
    return float(((s[:, 1] - s[:, 0]) + (s[:, 3] - s[:, 2]) + 3).mean())


def dataset(data, tokenizer, objective, seq, split, seed, eval_fraction):
    kw = dict(max_seq_length=seq, seed=seed, split=split, eval_fraction=eval_fraction, tokenizer=tokenizer)
    if objective == "mlm":
        return FullSentenceDataset(data, **kw)
    return PretrainingDataset(data, pairing="sop" if objective == "mlm+sop" else "nsp", **kw)


@torch.no_grad()
def score(model, ds, batch_size: int = 64, sentence: bool = False) -> dict:
    """Masked-token accuracy (and the 2-way head's accuracy when `sentence`) over all of `ds` with fixed masks."""
    collate = PretrainingCollator(ds.masker(0.15), pad_id=ds.special.pad_id)
    collate.masker.seed = EVAL_SEED
    model.eval()
    correct = count = s_correct = s_count = 0
    label_counts = np.zeros(ds.data.vocab_size, dtype=np.int64)
    for start in range(0, len(ds), batch_size):
        batch = collate(ds.__getitems__(np.arange(start, min(start + batch_size, len(ds)))), epoch=EVAL_EPOCH)
        out = model(**batch.forward_inputs(True), **batch.mlm_targets(True))
        correct += int((out.mlm_predictions == batch.mlm_labels).sum())
        count += batch.mlm_labels.numel()
        label_counts += np.bincount(batch.mlm_labels.numpy(), minlength=len(label_counts))
        if sentence:
            s_correct += int((out.nsp_logits.argmax(-1) == batch.next_sentence_label).sum())
            s_count += batch.next_sentence_label.numel()
    res = {"mlm_acc": correct / count, "unigram_acc": int(label_counts.max()) / count, "masked_tokens": count,
           "samples": len(ds)}
    if sentence:
        res["sentence_acc"] = s_correct / s_count
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", default="runs/objectives")
    ap.add_argument("--json", default="benchmarks/results/objectives.json")
    ap.add_argument("--objectives", default=",".join(OBJECTIVES))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--tokens-per-step", type=int, default=6144)
    ap.add_argument("--max-seq-length", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup-steps", type=int, default=40)
    ap.add_argument("--eval-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from bertforge.training.trainer import pretrain

    seq, common = args.max_seq_length, (args.seed, args.eval_fraction)
    res: dict = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
                 "cpu_count": os.cpu_count(), "threads": args.threads, "load_average": os.getloadavg(),
                 "args": vars(args), "runs": {}}
    runs = {}
    for objective in args.objectives.split(","):
        mean_len = mean_sample_length(args.data, args.tokenizer, objective, seq, *common)
        micro = max(1, round(args.tokens_per_step / mean_len))
        run_dir = Path(args.out) / objective.replace("+", "_")
        cfg = PretrainConfig.from_flat(
            data_dir=args.data, tokenizer=args.tokenizer, objective=objective, output_dir=str(run_dir),
            preset="tiny", max_seq_length=seq, micro_batch=micro, global_batch=micro, steps=args.steps, lr=args.lr,
            warmup_steps=args.warmup_steps, decay="linear", unpadded=True, pack=objective != "mlm",
            eval_fraction=args.eval_fraction, eval_every=0, eval_samples=10 ** 6, save_every=0,
            seed=args.seed, progress=False, export_hf=False)
        t = time.perf_counter()
        result = pretrain(cfg)
        if result.status != "finished":  # SIGTERM: the checkpoint is saved, the comparison is incomplete
            raise SystemExit(f"{objective}: run {result.status} at step {result.step}; comparison stopped")
        runs[objective] = run_dir
        res["runs"][objective] = {"micro_batch": micro, "mean_sample_tokens": mean_len,
                                  "tokens_seen": mean_len * micro * args.steps, "train_s": time.perf_counter() - t,
                                  "own_eval": result.eval, "last_train_line": result.train}
        print(f"{objective}: micro batch {micro} x {mean_len:.1f} tokens, {res['runs'][objective]['train_s']:.0f} s, "
              f"own held-out {json.dumps(result.eval)}", flush=True)

    held = {name: dataset(args.data, args.tokenizer, obj, seq, "eval", *common)
            for name, obj in (("full", "mlm"), ("nsp", "mlm+nsp"), ("sop", "mlm+sop"))}
    for objective, run_dir in runs.items():
        model = load_model_from_checkpoint(run_dir)
        scored = {"full": score(model, held["full"]), "nsp": score(model, held["nsp"], sentence=objective != "mlm")}
        if objective != "mlm":
            scored["sop"] = score(model, held["sop"], sentence=True)
        res["runs"][objective]["common_eval"] = scored
    write_json(Path(args.json), res)

    print(f"\n{args.steps} steps, ~{args.tokens_per_step} tokens/step, tiny preset, held-out = {args.eval_fraction:.0%} "
          f"of the documents ({res['date']}, {res['cpu_count']} cores, {args.threads} threads)")
    print("| objective | micro batch | tokens seen | held-out MLM acc, full sequences | held-out MLM acc, NSP pairs "
          "| held-out NSP acc | held-out SOP acc | train s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for objective in runs:
        r = res["runs"][objective]
        ce = r["common_eval"]
        sent = lambda k: f"{ce[k]['sentence_acc']:.1%}" if k in ce and "sentence_acc" in ce[k] else "–"  # noqa
        print(f"| {objective} | {r['micro_batch']} | {r['tokens_seen'] / 1e6:.2f}M | {ce['full']['mlm_acc']:.1%} | "
              f"{ce['nsp']['mlm_acc']:.1%} | {sent('nsp')} | {sent('sop')} | {r['train_s']:.0f} |")
    first = next(iter(res["runs"].values()))["common_eval"]
    print(f"| unigram baseline | | | {first['full']['unigram_acc']:.1%} | {first['nsp']['unigram_acc']:.1%} | 50% "
          f"| 50% | |")


if __name__ == "__main__":
    main()
