"""The resume rule: a resume continues the run the checkpoint belongs to, never another one.

A resume must match the checkpoint on everything that decides which samples are seen and how the weights move:
the data identity (data folder, tokenizer; finetuning: the training and dev data's content hash), the objective and
its masking, the global batch, the model, the labels, the seeds and the schedule (steps / token budget, epochs,
learning rate, warmup, decay, optimizer). Settings that only decide how a step is computed (micro batch, ranks,
precision, kernels, logging, checkpoint cadence, output options) may change. Any other difference is refused in one
line naming the setting, the checkpoint's value and the new one.

The one deliberate change is `extend_steps` (pretraining's --extend-steps N, with --resume): the run goes on to a
new total of N optimizer steps, larger than it planned. Its --steps / --tokens stay the planned ones (a larger
--steps alone is refused with a pointer to --extend-steps), and the schedule is recomputed for the new total by one
rule: the warmup keeps its number of steps and the decay is stretched to end at step N, so the learning rate of
every later step is that of a run planned for N steps with the same warmup (bertforge.optim.schedule_factor); the
first step after the resume takes that rate, never the finished run's 0. Each extension is recorded (step, old and
new totals) in the checkpoint's meta.json and RUN/config.json under "extended". Finetuning cannot be extended: its
length (--epochs, --min-steps) also decides its dev evaluations and the best state kept, so another length is
refused like any other change.

A finished run resumed with no deliberate change is a no-op that says so (`finished_noop`).

Field names are those of PretrainConfig.to_flat() (finetuning: the run config's to_flat() plus `data_identity`)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from bertforge.config.names import FINETUNE_FLAG_NAMES, PRETRAIN_FLAG_NAMES
from bertforge.errors import ConfigError
from bertforge.io import write_json
from bertforge.optim import sync_lr

MUST_MATCH = ("data_dir", "tokenizer", "data_identity", "objective", "mlm_probability", "masking",
              "whole_word_masking", "random_replacement", "short_seq_prob", "max_seq_length", "pack",
              "global_batch", "preset", "model_overrides", "init_from", "seed", "steps", "token_budget", "lr",
              "warmup_steps", "warmup_ratio", "decay", "decay_power", "optimizer", "betas", "eps", "weight_decay",
              "max_grad_norm", "dropout",
              # finetuning (FinetuneConfig, SplitFiles, the task's data section)
              "model", "from_scratch", "epochs", "min_steps", "recipe", "layer_lr_decay", "reinit_layers",
              "adam_eps", "evals_per_epoch", "early_stopping", "seeds", "data_file", "split", "split_seed",
              "text_column", "text_b_column", "label_column", "metric", "class_weight", "pooling", "scheme",
              "label_names", "label_all_subwords", "stride", "corpus", "held_out", "max_docs",
              "max_train_sequences", "max_eval_sequences", "task", "labels",
              "train_data", "dev_data", "test_data", "corpus_data")
"""Settings a resume may not change (those absent from either side are not compared). Finetuning's --train / --dev
/ --test / --data paths are not compared but what was read from them is: `<part>_data`, the content hash of each
part's records (`content_hash`), and the labels found."""
LENGTH = ("steps", "token_budget")
"""Pretraining settings whose growth is the deliberate change --extend-steps makes instead."""
FINETUNE_LENGTH = ("epochs", "min_steps")
_FLAGS = {**PRETRAIN_FLAG_NAMES, **FINETUNE_FLAG_NAMES}


_NAMED = {"task": "the task (finetune classify / ner / mlm)", "labels": "the label set",
          **{f"{part}_data": f"the {part} data (content hash of its records)" for part in ("train", "dev", "test")},
          "corpus_data": "the corpus (content hash of its documents)"}


def _flag(name: str) -> str:
    return _NAMED.get(name) or "--" + _FLAGS.get(name, name).replace("_", "-")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def _hint(name: str, old: Any, value: Any, new: Mapping[str, Any]) -> str:
    longer = isinstance(value, (int, float)) and isinstance(old, (int, float)) and value > old > 0
    if name in LENGTH and "extend_steps" in new and longer:
        target = value if name == "steps" else "N"
        return (f"; to train the run longer keep {_flag(name)} {old} and pass --extend-steps {target} (the new "
                f"total of optimizer steps: the schedule is recomputed and the change recorded in config.json)")
    if name in FINETUNE_LENGTH:
        return (f"; a finetuning run cannot be extended (its length also sets its dev evaluations and the best "
                f"state kept): resume with {_flag(name)} {old}, or finetune again into another --out")
    if name.endswith("_data"):
        return "; resume with the data the run was started with, or start a new run in another --out"
    hint = "; resume with the checkpoint's value, or start a new run in another output folder"
    if name in LENGTH:
        hint += " (to train on from this checkpoint: a new run with --init-from)"
    return hint


def check_resume(saved: Mapping[str, Any], new: Mapping[str, Any], where: str = "the checkpoint") -> None:
    """Refuse a resume that changes the run: ConfigError, one line, for the first setting of MUST_MATCH that
    differs between `saved` (the checkpoint's flat settings) and `new` (this launch's): the setting, its
    checkpoint value, the new value and what to do instead."""
    for name in MUST_MATCH:
        if name not in saved or name not in new or _same(saved[name], new[name]):
            continue
        old, value = saved[name], new[name]
        raise ConfigError(f"--resume: {_flag(name)} is {value!r} but {where} was trained with {old!r}"
                          f"{_hint(name, old, value, new)}")


def check_extension(saved: Mapping[str, Any], new: Mapping[str, Any], planned: int, where: str = "the checkpoint"
                    ) -> tuple[int, int] | None:
    """(the checkpoint's total steps, the new total) when this resume extends the run; None when the total stays.
    `planned`: the run's planned steps (--steps or from --tokens; equal on both sides once check_resume passed).
    ConfigError, one line, for a total that would shrink, and for an extended run resumed without its extension."""
    if "extend_steps" not in new:
        return None
    old_ext, ext = int(saved.get("extend_steps") or 0), int(new.get("extend_steps") or 0)
    old_total = old_ext or planned
    if ext == old_ext:
        return None
    if not ext:
        raise ConfigError(f"--resume: --extend-steps is not given but {where} belongs to a run extended to "
                          f"{old_ext} steps; pass --extend-steps {old_ext} to continue it (or a larger total to "
                          f"extend it again)")
    if ext <= old_total:
        keep = f"--extend-steps {old_ext}" if old_ext else "no --extend-steps"
        raise ConfigError(f"--resume: --extend-steps is {ext} but {where}'s run already has {old_total} steps; "
                          f"give a larger new total, or {keep} to continue it as it is")
    return old_total, ext


def finished_noop(finished: bool, extension: tuple[int, int] | None, where: str, total: int | None = None
                  ) -> str | None:
    """The line to print, and nothing else to do, when a finished run is resumed with no extension; None when the
    run must go on (unfinished, or extended)."""
    if finished and not extension:
        longer = f"--extend-steps N with N > {total}" if total else "--extend-steps N"
        return (f"{where}: the run finished; nothing to do (to train it longer: --resume {longer}, the new total of "
                f"steps; or a new run from it with --init-from)")
    return None


def record_extension(history: Iterable[Mapping], step: int, extension: tuple[int, int] | None) -> list[dict]:
    """`history` (the run's list of extensions) with this resume's appended as {"step", "from_steps",
    "to_steps"} (step: optimizer steps done when the extension began)."""
    out = [dict(h) for h in history]
    if extension is not None:
        out.append({"step": int(step), "from_steps": extension[0], "to_steps": extension[1]})
    return out


@dataclass
class ResumePlan:
    """What a launch does with its checkpoint: `noop` (the line to print when a finished run has nothing to do),
    `extension` ((old total, new total) of this resume's extension, or None), `extended` (the run's extension
    history, this one included: for meta.json and config.json)."""

    noop: str | None = None
    extension: tuple[int, int] | None = None
    extended: list = field(default_factory=list)


def plan_resume(meta: Mapping[str, Any], new: Mapping[str, Any], where: Any, planned: int) -> ResumePlan:
    """Apply the rule to a checkpoint's meta.json ("train_config", "finished", "step", "extended") and this
    launch's flat settings `new`; `planned`: the run's planned steps. ConfigError (one line) when refused."""
    saved = meta.get("train_config") or {}
    check_resume(saved, new, where=str(where))
    extension = check_extension(saved, new, planned, where=str(where))
    total = int(saved.get("extend_steps") or 0) or planned
    return ResumePlan(noop=finished_noop(bool(meta.get("finished")), extension, str(where), total),
                      extension=extension,
                      extended=record_extension(meta.get("extended") or [], int(meta.get("step", 0)), extension))


def continue_schedule(scheduler, plan: ResumePlan, log: Callable[[str], None], warmup: int, decay: str) -> None:
    """After the checkpoint's scheduler state is loaded: the optimizer takes the rate the (possibly recomputed)
    schedule gives the next step (bertforge.optim.sync_lr; the restored optimizer state holds the old schedule's,
    0 at the end of a finished run), and an extension is logged with its rule and that rate."""
    rates = sync_lr(scheduler)
    if plan.extension is None:
        return
    old, new = plan.extension
    step = plan.extended[-1]["step"]
    log(f"--extend-steps {new}: the run goes on from step {step} to {new} steps (it had {old}); learning-rate "
        f"schedule recomputed for {new} steps: warmup unchanged ({warmup} steps), {decay} decay stretched to end "
        f"at step {new} (the schedule of a run planned for {new} steps with this warmup); lr of the next step "
        f"{rates[0]:.6g}; recorded under \"extended\" in config.json")


# ---- finetuning: the run's settings, recorded at its start and checked on --resume ---------------------------
RUN_FILE = "run.json"
"""OUT/run.json of a finetuning run: {"settings": {...}} (the run config's flat settings with the recipe's choices
filled in, the task, the labels and each data part's content hash)."""


def content_hash(records: Iterable[Any] | None) -> str | None:
    """sha256 (first 16 hex digits) of JSON-ready records in order; None for no records (a part not given)."""
    h, n = hashlib.sha256(), 0
    for record in records or ():
        h.update(json.dumps(record, ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n")
        n += 1
    return h.hexdigest()[:16] if n else None


def guard_run_settings(out_dir: str | Path, settings: Mapping[str, Any], resume: bool, write: bool = True
                       ) -> str | None:
    """A new run records `settings` in OUT/run.json (when `write`: rank 0). A resume checks them against that file
    (check_resume: ConfigError, one line, naming the setting, the run's value and the new one); a run started
    before the record existed has it written now. Returns a line to print in that case, else None."""
    path = Path(out_dir) / RUN_FILE
    flat = {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}
    if resume and path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))["settings"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"--resume: {path}: cannot read the run's recorded settings ({exc}); resume needs it "
                              f"whole, or start a new run in another --out") from None
        check_resume(saved, flat, where=f"the run in {Path(out_dir)}")
        return None
    if write:
        write_json(path, {"settings": flat}, indent=2)
    if resume:
        return (f"note: {path} was missing (a run started before settings were recorded): this launch's settings "
                f"are recorded now, not checked against the interrupted launch's")
    return None
