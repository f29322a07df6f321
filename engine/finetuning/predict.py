"""Inference and scoring with a finetuned model directory (the seed-N/ folders `bertforge finetune` writes, or any
Hugging Face BertForSequenceClassification / BertForTokenClassification directory with id2label).

predict: file in, one JSON object per input out, in input order — classification {"label", "probabilities":
{label: p}}; token classification {"tokens", "tags" (in the requested scheme), "entities": [{"type", "start", "end",
"text", "score"}]} (entity schemes; word indices, end exclusive, the mean word probability as score; a stray I-X of
the model, which starts no entity in evaluate's strict IOB2 scoring (seqeval's strict mode), is answered as O, so
the tags, the entities and evaluate's counts agree). evaluate: the
task's metrics on a labelled file (a gold label the model does not know counts as a miss, with a warning).

Any file size in constant memory: the input is read as a stream (engine/finetuning/reading.py) in chunks of CHUNK
records; each chunk is encoded, batched by length and run on the GPU when there is one (fp32, or bf16 / fp16
autocast; --kernels triton), and its rows written before the next is read. Under torchrun chunk c runs on rank
c % world: every rank writes its chunks to a part file and rank 0 interleaves the parts into the one output, so the
output is the same, line for line, as one process' (the chunks and their batches do not depend on the rank count).
Metrics are sums of counts (confusion pairs, entity counts), added up over chunks and ranks."""
from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from bertforge import distributed as D
from bertforge.config.finetune import InferenceConfig
from bertforge.data.tokenizer import check_vocab_rows, load_tokenizer
from bertforge.errors import CheckpointError, ConfigError
from bertforge.finetuning import data_classify as dc
from bertforge.finetuning import data_ner as dn
from bertforge.finetuning.evaluation import local_outputs
from bertforge.finetuning.metrics import (entity_counts, entity_metrics_from_counts, format_report, iob2_spans,
                                     pair_metrics)
from bertforge.finetuning.reading import LineReader, strip_ending
from bertforge.finetuning.tasks import TASK_FILE, ClassifyTask, NerTask
from bertforge.hf import load_pretrained, read_config
from bertforge.io import atomic_file, check_folder, check_output_file, write_json
from bertforge.log import result_echo
from bertforge.parallelize import check_device_support
from bertforge.progress import progress as progress_reporter

ECHO = result_echo(__name__)  # the default echo: result lines through logging (the CLI passes print)

CHUNK = 4096  # records read, encoded and written together; the unit of sharding over ranks
_ARCH_TASK = {"BertForSequenceClassification": "classify", "BertForTokenClassification": "ner"}


@dataclass
class Finetuned:
    task: ClassifyTask | NerTask
    model: torch.nn.Module
    tokenizer: object
    directory: Path
    label_names: list[str] | None = None  # --label-names: the input's label / tag ids -> names (checked)


def input_label_names(value: str, task: ClassifyTask | NerTask, scheme: str, directory: Path) -> list[str] | None:
    """--label-names (bertforge.finetuning.data_ner.read_label_names: a comma list or a file), checked against the
    model's labels (its id2label): every name one of them and as many names as labels; entity tags in another
    scheme than the model's IOB2 (`scheme`: the input's): the same entity types. ConfigError, one line, naming both
    lists otherwise. None when `value` is empty."""
    if not value:
        return None
    names = dn.read_label_names(value)
    labels = list(task.labels)
    if isinstance(task, NerTask) and scheme not in ("iob2", "plain") and task.scheme != "plain":
        named, known = ({t[2:] for t in tags if t != "O"} for tags in (names, labels))
        unknown = sorted(named - known)
        if unknown or named != known:
            what = (f"type {unknown[0]!r} is not one" if unknown
                    else f"{len(named)} entity types are not the {len(known)}")
            raise ConfigError(f"--label-names {value}: entity {what} of the model {directory} "
                              f"({', '.join(sorted(known))}); give the names of the input's tag ids")
        return names
    unknown = [n for n in names if n not in labels]
    if unknown:
        raise ConfigError(f"--label-names {value}: {unknown[0]!r} is not a label of the model {directory} (its "
                          f"{len(labels)}: {', '.join(labels)}); give the input's id names in the model's terms")
    if len(names) != len(labels):
        raise ConfigError(f"--label-names {value}: {len(names)} names but the model {directory} has {len(labels)} "
                          f"labels ({', '.join(labels)}); give one name per label id of the input")
    return names


def _check_finetuned_folder(directory: Path) -> None:
    """CheckpointError with the next step when `directory` is a `bertforge finetune` output folder (its models are
    in seed-N/) or a `bertforge pretrain` run folder (no finetuned head yet) instead of a finetuned model."""
    if (directory / "config.json").is_file() and not (directory / "checkpoints").is_dir():
        return
    seeds = sorted((p for p in directory.glob("seed-*") if (p / "config.json").is_file()),
                   key=lambda p: (len(p.name), p.name))
    if seeds:
        raise CheckpointError(f"{directory}: a finetuning run's folder; give one of its exported models, e.g. "
                              f"{seeds[0]}")
    if (directory / "checkpoints").is_dir():
        raise CheckpointError(f"{directory}: a pretraining run, which has no classifier; finetune it first "
                              f"(bertforge finetune classify|ner --model {directory} ...) and give the model it "
                              f"exports (OUT/seed-1)")


def load_finetuned(directory: str | Path, max_seq_length: int | None = None, kernels: str = "none") -> Finetuned:
    """The task (labels, length and NER settings from TASK_FILE, else config.json's id2label) and the model of a
    finetuned directory, in eval mode on the CPU. `max_seq_length` None: the length it was trained with.
    CheckpointError when the directory holds no finetuned classifier."""
    directory = Path(directory)
    _check_finetuned_folder(directory)
    # last_layer_subset: a [CLS]-pooled classifier's last layer runs on the [CLS] rows only (the same logits)
    config = read_config(directory).replace(kernels=kernels, last_layer_subset=True)
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
    config.check_seq_length(length, model=directory)
    if name == "classify":  # pooling: ours, or ModernBERT's config.json key; models saved before it pool [CLS]
        task = ClassifyTask(labels, length, pooling=info.get("pooling") or raw.get("classifier_pooling") or "cls")
    else:
        task = NerTask(labels, length, info.get("label_all_subwords", False), info.get("stride", 32),
                       info.get("scheme", "iob2"))
    model = task.build_model(config)
    report = load_pretrained(directory, model)
    if any(k.startswith("classifier.") for k in report.initialised):
        raise CheckpointError(f"{directory}: the checkpoint has no classifier weights (not a finetuned model)")
    model.eval()
    tok = load_tokenizer(directory)
    check_vocab_rows(tok.get_vocab_size(), config.vocab_size, directory, directory)
    return Finetuned(task, model, tok, directory)


# ---- rows of one chunk ------------------------------------------------------------------------------------------
@dataclass
class Runner:
    """Where and how the model runs: device, micro batch, autocast precision."""

    ft: Finetuned
    dev: torch.device = torch.device("cpu")
    micro_batch: int = 64
    precision: str = "fp32"

    def outputs(self, features: list) -> list:
        return local_outputs(self.ft.model, self.ft.task, features, self.micro_batch, self.dev, True, self.precision)


def classify_rows(run: Runner, examples: list[dc.Example]) -> list[dict]:
    task: ClassifyTask = run.ft.task  # type: ignore[assignment]
    probs = run.outputs(dc.encode(run.ft.tokenizer, examples, task.max_seq_length))
    rows = []
    for e, p in zip(examples, probs):
        p = p.tolist()
        best = max(range(len(p)), key=p.__getitem__)
        row = {"line": e.line, "text": e.text}
        if e.text_b is not None:
            row["text_b"] = e.text_b
        row.update(label=task.labels[best], probabilities=dict(zip(task.labels, p)))
        if run.ft.label_names is not None:  # the prediction in the input's id space
            row["label_id"] = run.ft.label_names.index(task.labels[best])
        if e.label is not None:
            row["gold"] = e.label
        rows.append(row)
    return rows


def ner_rows(run: Runner, sentences: list[dn.Sentence], out_scheme: str = "iob2", in_scheme: str | None = None,
             strict: bool = False) -> list[dict]:
    """One row per sentence; "tags" in `out_scheme` (IOB2 tags of the model converted), "gold" likewise; with
    --label-names of the input's scheme `in_scheme` = `out_scheme`, "tag_ids" too (each tag's id in them).
    `strict` (predict): a stray I-X of the model becomes O first (data_ner.strict_iob2), so the tags, the entities
    and evaluate's strict scoring agree; without it (evaluate) the tags are the model's own and the entities their
    strict IOB2 spans, as scored. Plain tags are never changed."""
    ids = ({n: i for i, n in enumerate(run.ft.label_names)}
           if run.ft.label_names is not None and in_scheme == out_scheme else None)
    task: NerTask = run.ft.task  # type: ignore[assignment]
    wins = dn.encode(run.ft.tokenizer, sentences, task.max_seq_length, None, stride=task.stride,
                     scheme=task.scheme)
    tags, probs = task.tags(wins, run.outputs(wins), sentences)
    rows = []
    for s, t, p in zip(sentences, tags, probs):
        if strict and task.scheme != "plain":
            t = dn.strict_iob2(t)
        row = {"line": s.lines[0], "tokens": s.tokens, "tags": dn.from_iob2(t, out_scheme)}
        if ids is not None:
            row["tag_ids"] = [ids[tag] for tag in row["tags"]]
        if task.scheme != "plain":
            row["entities"] = [{"type": etype, "start": a, "end": b, "text": " ".join(s.tokens[a:b]),
                                "score": sum(p[a:b]) / (b - a)} for a, b, etype in iob2_spans(t)]
        else:
            row["scores"] = p
        if s.tags is not None:
            row["gold"] = dn.from_iob2(s.tags, out_scheme)
        rows.append(row)
    return rows


# ---- streams ----------------------------------------------------------------------------------------------------
def _text_sentences(lines: LineReader) -> Iterator[dn.Sentence]:
    """A .txt file for token classification: one sentence per non-blank line, split on whitespace."""
    for lineno, raw in lines:
        words = strip_ending(raw).split()
        if words:
            yield dn.Sentence(words, None, str(lines.path), [lineno] * len(words))
    if lines.blank:
        raise lines.empty_error()


def records(ft: Finetuned, config: InferenceConfig, labelled: bool, lines: LineReader) -> Iterator:
    """The inputs of config.input one at a time: Examples (classification) or Sentences (tags in IOB2, or plain)."""
    if isinstance(ft.task, ClassifyTask):
        return dc.iter_examples(config.input, config.text_column, config.text_b_column,
                                config.label_column if labelled else None, config.encoding, config.format, lines,
                                label_names=ft.label_names)
    if Path(config.input).suffix.lower() == ".txt" and not labelled:
        return _text_sentences(lines)
    return dn.iter_sentences(config.input, config.scheme or ft.task.scheme, labelled, config.encoding, lines,
                             label_names=ft.label_names)


def _parts_dir(out: str) -> Path:
    target = Path(out) if out not in ("", "-") else Path.cwd() / "stdout"
    return target.parent / f".{target.name}.parts"


class _Output:
    """Rows to `out` in input order: directly with one rank; with several, to one part file per rank that rank 0
    interleaves chunk by chunk at `close` ('-' or '': stdout)."""

    def __init__(self, out: str):
        self.out, self.rank, self.world = out, D.rank(), D.world_size()
        self.stack: list = []
        if self.world == 1:
            self.fh = sys.stdout if out in ("", "-") else self._enter(atomic_file(out, "w"))
            return
        self.parts = _parts_dir(out)
        if self.rank == 0:
            shutil.rmtree(self.parts, ignore_errors=True)
            self.parts.mkdir(parents=True)
        D.barrier()
        self.fh = self._enter(open(self.parts / f"rank-{self.rank}.jsonl", "w", encoding="utf-8"))

    def _enter(self, cm):
        fh = cm.__enter__()
        self.stack.append(cm)
        return fh

    def write(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self.fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    def close(self, ok: bool = True) -> None:
        while self.stack:
            cm = self.stack.pop()
            cm.__exit__(None, None, None) if ok else cm.__exit__(RuntimeError, RuntimeError("failed"), None)
        if self.world == 1:
            return
        D.barrier()
        if self.rank == 0 and ok:
            files = [open(self.parts / f"rank-{r}.jsonl", encoding="utf-8") for r in range(self.world)]
            try:
                with (atomic_file(self.out, "w") if self.out not in ("", "-") else _stdout()) as fh:
                    for chunk in range(sys.maxsize):
                        lines = list(islice(files[chunk % self.world], CHUNK))
                        fh.writelines(lines)
                        if len(lines) < CHUNK:
                            break
            finally:
                for f in files:
                    f.close()
        if self.rank == 0:
            shutil.rmtree(self.parts, ignore_errors=True)
        D.barrier()


class _stdout:
    def __enter__(self):
        return sys.stdout

    def __exit__(self, *exc):
        sys.stdout.flush()


def _run(config: InferenceConfig, labelled: bool, out: str | None,
         on_rows: Callable[[Finetuned, list[dict]], None]) -> tuple[Finetuned, int]:
    """Stream config.input through the model, this rank's chunks only: `on_rows(model, rows)` per chunk, and the
    rows to `out` in input order (None: not written). Returns (the model, rows of this rank)."""
    check_folder(config.model, "MODEL_DIR", "the folder of a finetuned model (e.g. OUT/seed-1 of `bertforge finetune`)")
    if config.max_seq_length:  # before any work: one line, not a traceback from the position embedding
        read_config(config.model).check_seq_length(config.max_seq_length, model=config.model)
    check_device_support(config.precision, config.kernels)
    if config.threads:
        torch.set_num_threads(config.threads)
    D.join_group()
    ft = load_finetuned(config.model, config.max_seq_length, config.kernels)
    in_scheme = config.scheme or getattr(ft.task, "scheme", None)
    ft.label_names = input_label_names(config.label_names, ft.task, in_scheme, ft.directory)
    dev = D.device()
    ft.model.to(dev)
    run = Runner(ft, dev, config.micro_batch, config.precision)
    lines = LineReader(config.input, config.encoding)
    rank, world = D.rank(), D.world_size()
    progress = progress_reporter(lines.size, f"{'evaluate' if labelled else 'predict'} {Path(config.input).name}",
                                 unit="B", leave=False, enabled=rank == 0, unit_scale=True, bar=config.progress)
    output = _Output(out) if out is not None else None
    n, ok, seen = 0, False, 0
    try:
        stream = records(ft, config, labelled, lines)
        for c in range(sys.maxsize):
            chunk = list(islice(stream, CHUNK))
            if not chunk:
                break
            progress.update(lines.bytes_read - seen)
            seen = lines.bytes_read
            if c % world != rank:
                continue
            if isinstance(ft.task, ClassifyTask):
                rows = classify_rows(run, chunk)
            else:  # evaluate scores the model's IOB2 strictly; predict answers valid tags in the input's scheme
                rows = ner_rows(run, chunk, "iob2" if labelled else in_scheme, in_scheme, strict=not labelled)
            on_rows(ft, rows)
            if output is not None:
                output.write(rows)
            n += len(rows)
        ok = True
    finally:
        progress.close()
        if output is not None:
            output.close(ok)
    return ft, n


# ---- the commands' calls ----------------------------------------------------------------------------------------
def predict(config: InferenceConfig, echo: Callable[[str], None] = ECHO) -> int:
    """Predictions for every input of config.input, as JSONL to config.out (stdout when empty or '-') in input
    order. Returns the number of rows (over all ranks)."""
    if config.out not in ("", "-"):  # before the model is loaded, not at the final rename
        check_output_file(config.out, "--out", "predictions.jsonl")
    _, n = _run(config, False, config.out, lambda ft, rows: None)
    total = int(D.all_reduce_sum([n], D.device())[0])
    if config.out not in ("", "-") and D.rank() == 0:
        echo(f"predict: {total} predictions -> {config.out}")
    return total


def evaluate(config: InferenceConfig, echo: Callable[[str], None] = ECHO) -> dict:
    """The metrics of the model on the labelled file config.input: echoed as a report, written as JSON to
    config.out and the prediction rows to config.predictions (each when given; rank 0). Returns the metrics."""
    if config.out:  # before the model is loaded, not after the whole file
        check_output_file(config.out, "--out", "metrics.json")
    if config.predictions:
        check_output_file(config.predictions, "--predictions", "predictions.jsonl")
    counts: Counter = Counter()

    def add(ft: Finetuned, rows: list[dict]) -> None:
        task = ft.task
        if isinstance(task, ClassifyTask):
            counts.update((r["gold"], r["label"]) for r in rows)
        elif task.scheme == "plain":
            counts.update(pair for r in rows for pair in zip(r["gold"], r["tags"]))
        else:
            counts.update(entity_counts([r["gold"] for r in rows], [r["tags"] for r in rows]))

    ft, _ = _run(config, True, config.predictions or None, add)
    if D.world_size() > 1:
        counts = sum(D.all_gather_object(counts), Counter())
    task = ft.task
    if isinstance(task, NerTask) and task.scheme != "plain":
        unknown = sorted({t for t, kind in counts if kind == "gold"} - {l[2:] for l in task.labels if l != "O"})
        metrics = entity_metrics_from_counts(counts)
    else:
        unknown = sorted({g for g, _ in counts} - set(task.labels))
        metrics = pair_metrics(counts, task.labels)
    if D.rank() == 0:
        for label in unknown:
            ids = (" (an integer id? give the names of the ids with --label-names)"
                   if str(label).isdigit() and not any(l.isdigit() for l in task.labels) else "")
            echo(f"warning: {config.input}: gold {'type' if isinstance(task, NerTask) else 'label'} {label!r} is "
                 f"not one the model knows ({', '.join(task.labels)}); it counts as a miss{ids}")
        echo(format_report(metrics))
        if config.out:
            write_json(config.out, metrics, indent=2)
    return metrics
