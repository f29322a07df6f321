"""`bertforge predict MODEL_DIR INPUT --out OUT.jsonl`: labels and probabilities (classification) or entity spans
(NER) for every input of a file, one JSON object per line."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_input_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="finetuned model directory (e.g. OUT/seed-1 of bertforge finetune)")
    p.add_argument("input", type=Path, help="CSV / TSV / JSONL (classification); CoNLL, JSONL tokens or .txt "
                                            "one sentence per line (NER)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--text-b-column", default=None)
    p.add_argument("--label-column", default="label", help="(evaluate) gold label column")
    p.add_argument("--format", choices=("csv", "tsv", "jsonl"), default=None)
    p.add_argument("--scheme", choices=("iob1", "iob2", "bioes"), default=None,
                   help="NER tag scheme of the input and the output (default: the model's training scheme)")
    p.add_argument("--encoding", default="utf-8")
    p.add_argument("--max-len", type=int, default=None, help="default: the length the model was trained with")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=0)


def run(args) -> int:
    import torch

    from engine.finetune import predict as P
    from engine.finetune.tasks import ClassifyTask

    if args.threads:
        torch.set_num_threads(args.threads)
    ft = P.load_finetuned(args.model, args.max_len)
    if isinstance(ft.task, ClassifyTask):
        from engine.finetune.data_classify import read_examples

        examples = read_examples(args.input, args.text_column, args.text_b_column, None, args.encoding, args.format)
        rows = P.classify_rows(ft, examples, args.batch_size)
    else:
        scheme = args.scheme or ft.task.scheme
        sentences = P.read_ner_input(args.input, scheme, labelled=False, encoding=args.encoding)
        rows = P.ner_rows(ft, sentences, scheme, args.batch_size)
    n = P.write_jsonl(rows, args.out)
    if str(args.out) != "-":
        print(f"predict: {n} predictions -> {args.out}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="run a finetuned model over a file, JSONL out", description=__doc__)
    add_input_args(p)
    p.add_argument("--out", default="-", help="output JSONL (default: stdout)")
    p.set_defaults(func=run)
