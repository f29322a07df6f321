"""`bertforge evaluate MODEL_DIR LABELLED_FILE`: accuracy / macro-F1 / per-class scores / confusion matrix
(classification) or entity precision / recall / F1 overall and per type (NER); JSON with --out, predictions with
--predictions."""
from __future__ import annotations

import json
import os
from pathlib import Path

from engine.commands.predict import add_input_args


def format_report(metrics: dict) -> str:
    lines = []
    if "accuracy" in metrics:
        lines.append(f"accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  (n={metrics['n']})")
        lines.append(f"{'class':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
        for label, row in metrics["per_class"].items():
            lines.append(f"{label:<16}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}"
                         f"{row['support']:>9}")
        labels = metrics["confusion"]["labels"]
        lines.append("confusion (rows gold, columns predicted): " + " ".join(labels))
        for label, row in zip(labels, metrics["confusion"]["matrix"]):
            lines.append(f"  {label:<14}" + "".join(f"{x:>8}" for x in row))
    else:
        lines.append(f"entity precision {metrics['precision']:.4f}  recall {metrics['recall']:.4f}  "
                     f"f1 {metrics['f1']:.4f}  (gold {metrics['n_gold']}, predicted {metrics['n_pred']})")
        lines.append(f"{'type':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
        for etype, row in metrics["per_type"].items():
            lines.append(f"{etype:<16}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}"
                         f"{row['support']:>9}")
    return "\n".join(lines)


def run(args) -> int:
    import torch

    from engine.finetune import predict as P

    if args.threads:
        torch.set_num_threads(args.threads)
    ft = P.load_finetuned(args.model, args.max_len)
    metrics, rows = P.evaluate_file(ft, args.input, text_column=args.text_column, text_b_column=args.text_b_column,
                                    label_column=args.label_column, scheme=args.scheme or getattr(ft.task, "scheme",
                                                                                                    "iob2"),
                                    encoding=args.encoding, fmt=args.format, batch_size=args.batch_size)
    print(format_report(metrics))
    if args.out:
        tmp = Path(f"{args.out}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, args.out)
    if args.predictions:
        P.write_jsonl(rows, args.predictions)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="score a finetuned model on a labelled file", description=__doc__)
    add_input_args(p)
    p.add_argument("--out", type=Path, default=None, help="write the metrics as JSON here")
    p.add_argument("--predictions", type=Path, default=None, help="write per-input predictions (JSONL) here")
    p.set_defaults(func=run)
