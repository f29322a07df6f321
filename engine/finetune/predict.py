"""Inference and scoring with a finetuned model directory (the seed-N/ folders `bertforge finetune` writes, or any
Hugging Face BertForSequenceClassification / BertForTokenClassification directory with id2label).

predict: file in, one JSON object per input out — classification {"label", "probabilities": {label: p}};
NER {"tokens", "tags" (in the requested scheme), "entities": [{"type", "start", "end", "text", "score"}]} with word
indices (end exclusive) and the mean word probability as score. evaluate: the task's metrics on a labelled file.
`predict` and `evaluate` each run one InferenceConfig (the commands' single call)."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from engine.config.finetune import InferenceConfig
from engine.data.tokenizer import load_tokenizer
from engine.errors import CheckpointError
from engine.finetune import data_classify as dc
from engine.finetune import data_ner as dn
from engine.finetune.metrics import classification_metrics, entity_metrics, format_report, iob2_spans
from engine.finetune.tasks import TASK_FILE, ClassifyTask, NerTask
from engine.hf import load_pretrained, read_config
from engine.io import atomic_file, write_json

_ARCH_TASK = {"BertForSequenceClassification": "classify", "BertForTokenClassification": "ner"}


@dataclass
class Finetuned:
    task: ClassifyTask | NerTask
    model: torch.nn.Module
    tokenizer: object
    directory: Path


def load_finetuned(directory: str | Path, max_seq_length: int | None = None) -> Finetuned:
    """The task (labels, length and NER settings from TASK_FILE, else config.json's id2label) and the model of a
    finetuned directory, in eval mode. `max_seq_length` None: the length it was trained with. CheckpointError when
    the directory holds no finetuned classifier."""
    directory = Path(directory)
    config = read_config(directory)
    raw = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    info_path = directory / TASK_FILE
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    name = info.get("task") or _ARCH_TASK.get((raw.get("architectures") or [""])[0])
    if name not in ("classify", "ner"):
        raise CheckpointError(f"{directory}: not a finetuned classification or token-classification model "
                              f"(no {TASK_FILE}, architectures {raw.get('architectures')})")
    id2label = raw.get("id2label") or {}
    labels = info.get("labels") or [id2label[k] for k in sorted(id2label, key=int)]
    if not labels:
        raise CheckpointError(f"{directory}/config.json: no id2label")
    # "max_len" is the same setting under its former name
    length = (max_seq_length or info.get("max_seq_length") or info.get("max_len")
              or config.max_position_embeddings)
    if name == "classify":
        task = ClassifyTask(labels, length)
    else:
        task = NerTask(labels, length, info.get("label_all_subwords", False), info.get("stride", 32),
                       info.get("scheme", "iob2"))
    model = task.build_model(config)
    report = load_pretrained(directory, model)
    if any(k.startswith("classifier.") for k in report.initialised):
        raise CheckpointError(f"{directory}: the checkpoint has no classifier weights (not a finetuned model)")
    model.eval()
    return Finetuned(task, model, load_tokenizer(directory), directory)


def write_jsonl(rows: Iterable[dict], out: str | Path) -> int:
    """Write one JSON object per line to `out` atomically ('-' or '': stdout). Returns the number of rows."""
    if str(out) in ("-", ""):
        return _write_rows(rows, sys.stdout)
    with atomic_file(out, "w") as fh:
        return _write_rows(rows, fh)


def _write_rows(rows: Iterable[dict], fh) -> int:
    n = 0
    for row in rows:
        fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        n += 1
    return n


# ---- classification ---------------------------------------------------------------------------------------------
def classify_rows(ft: Finetuned, examples: list[dc.Example], batch_size: int = 64) -> list[dict]:
    task: ClassifyTask = ft.task  # type: ignore[assignment]
    probs = task.predict(ft.model, dc.encode(ft.tokenizer, examples, task.max_seq_length), batch_size)
    rows = []
    for e, p in zip(examples, probs.tolist()):
        best = max(range(len(p)), key=p.__getitem__)
        row = {"line": e.line, "text": e.text}
        if e.text_b is not None:
            row["text_b"] = e.text_b
        row.update(label=task.labels[best], probabilities=dict(zip(task.labels, p)))
        if e.label is not None:
            row["gold"] = e.label
        rows.append(row)
    return rows


# ---- NER --------------------------------------------------------------------------------------------------------
def read_ner_input(path: str | Path, scheme: str, labelled: bool, encoding: str = "utf-8") -> list[dn.Sentence]:
    """CoNLL / JSONL as in training; a .txt file is one sentence per line, split on whitespace."""
    path = Path(path)
    if path.suffix.lower() == ".txt" and not labelled:
        text = dc.read_text(path, encoding)
        out = [dn.Sentence(line.split(), None, str(path), [i] * len(line.split()))
               for i, line in enumerate(dc._lines(text), 1) if line.strip()]
        return out
    return dn.read_conll(path, scheme, labelled=labelled, encoding=encoding)


def ner_rows(ft: Finetuned, sentences: list[dn.Sentence], out_scheme: str = "iob2", batch_size: int = 64
             ) -> list[dict]:
    task: NerTask = ft.task  # type: ignore[assignment]
    wins = dn.encode(ft.tokenizer, sentences, task.max_seq_length, None, stride=task.stride)
    tags, probs = task.predict_tags(ft.model, wins, sentences, batch_size)
    rows = []
    for s, t, p in zip(sentences, tags, probs):
        entities = [{"type": etype, "start": a, "end": b, "text": " ".join(s.tokens[a:b]),
                     "score": sum(p[a:b]) / (b - a)} for a, b, etype in iob2_spans(t)]
        row = {"line": s.lines[0], "tokens": s.tokens, "tags": dn.from_iob2(t, out_scheme), "entities": entities}
        if s.tags is not None:
            row["gold"] = dn.from_iob2(s.tags, out_scheme)
        rows.append(row)
    return rows


# ---- evaluate ---------------------------------------------------------------------------------------------------
def evaluate_file(ft: Finetuned, config: InferenceConfig) -> tuple[dict, list[dict]]:
    """Metrics on the labelled file config.input, and the per-input prediction rows."""
    task = ft.task
    if isinstance(task, ClassifyTask):
        examples = dc.read_examples(config.input, config.text_column, config.text_b_column, config.label_column,
                                    config.encoding, config.format)
        dc.check_labels(examples, task.labels, "evaluation")
        rows = classify_rows(ft, examples, config.batch_size)
        index = {l: i for i, l in enumerate(task.labels)}
        metrics = classification_metrics([index[e.label] for e in examples], [index[r["label"]] for r in rows],
                                         task.labels)
        return metrics, rows
    sentences = dn.read_conll(config.input, config.scheme or task.scheme, labelled=True, encoding=config.encoding)
    dn.check_tags(sentences, task.labels, "evaluation")
    rows = ner_rows(ft, sentences, "iob2", config.batch_size)
    return entity_metrics([s.tags for s in sentences], [r["tags"] for r in rows]), rows


# ---- the commands' calls ----------------------------------------------------------------------------------------
def predict(config: InferenceConfig, echo: Callable[[str], None] = print) -> int:
    """Predictions for every input of config.input, as JSONL to config.out (stdout when empty or '-'). Returns the
    number of rows."""
    if config.threads:
        torch.set_num_threads(config.threads)
    ft = load_finetuned(config.model, config.max_seq_length)
    if isinstance(ft.task, ClassifyTask):
        examples = dc.read_examples(config.input, config.text_column, config.text_b_column, None, config.encoding,
                                    config.format)
        rows = classify_rows(ft, examples, config.batch_size)
    else:
        scheme = config.scheme or ft.task.scheme
        sentences = read_ner_input(config.input, scheme, labelled=False, encoding=config.encoding)
        rows = ner_rows(ft, sentences, scheme, config.batch_size)
    n = write_jsonl(rows, config.out)
    if config.out not in ("", "-"):
        echo(f"predict: {n} predictions -> {config.out}")
    return n


def evaluate(config: InferenceConfig, echo: Callable[[str], None] = print) -> dict:
    """The metrics of the model on the labelled file config.input: echoed as a report, written as JSON to
    config.out and the prediction rows to config.predictions (each when given). Returns the metrics."""
    if config.threads:
        torch.set_num_threads(config.threads)
    ft = load_finetuned(config.model, config.max_seq_length)
    metrics, rows = evaluate_file(ft, config)
    echo(format_report(metrics))
    if config.out:
        write_json(config.out, metrics, indent=2)
    if config.predictions:
        write_jsonl(rows, config.predictions)
    return metrics
