"""The resume rule: a resume continues the run the checkpoint belongs to, never another one.

A resume must match the checkpoint on everything that decides which samples are seen and how the weights move:
the data identity (data folder, tokenizer; the dataset's tokenizer hash where recorded), the objective and its
masking, the global batch, the model, and the schedule (steps, learning rate, warmup, decay, optimizer). Settings
that only decide how a step is computed (micro batch, ranks, precision, kernels, logging, checkpoint cadence,
output options) may change. Any other difference is refused in one line naming the setting, the checkpoint's value
and the new one. The one deliberate change the rule knows is `extend_steps` (no command flag passes it yet): more steps than the
checkpoint planned, with the schedule recomputed for the new total and the change recorded in the run's history.
A finished run resumed with the same settings is a no-op that says so (`finished_noop`).

Field names are those of PretrainConfig.to_flat() (finetuning: FinetuneConfig's fields plus `data_identity`)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from bertforge.errors import ConfigError

MUST_MATCH = ("data_dir", "tokenizer", "data_identity", "objective", "mlm_probability", "masking",
              "whole_word_masking", "random_replacement", "short_seq_prob", "max_seq_length", "pack",
              "global_batch", "preset", "model_overrides", "init_from", "seed", "steps", "lr", "warmup_steps",
              "warmup_ratio", "decay", "decay_power", "optimizer", "betas", "eps", "weight_decay", "max_grad_norm",
              "dropout", "epochs", "seeds", "split", "split_seed", "model", "scheme", "label_all_subwords")
"""Settings a resume may not change (those absent from either side are not compared)."""
EXTENDABLE = {"extend_steps": ("steps", "epochs")}
"""Deliberate changes and the settings they allow to grow."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def check_resume(saved: Mapping[str, Any], new: Mapping[str, Any], allow: Iterable[str] = (),
                 where: str = "the checkpoint") -> dict[str, tuple[Any, Any]]:
    """The changes a resume makes to the checkpoint's settings, checked against the rule above.

    saved / new: flat settings {name: value} of the checkpoint and of this launch. allow: deliberate changes
    (keys of EXTENDABLE) the user asked for. Returns {name: (checkpoint value, new value)} of the allowed changes
    (to record in the run's history). ConfigError, one line, for the first other difference: the setting, its
    checkpoint value, the new value and what to do; and for a step count that would shrink."""
    allowed = {name for key in allow for name in EXTENDABLE.get(key, ())}
    changes: dict[str, tuple[Any, Any]] = {}
    for name in MUST_MATCH:
        if name not in saved or name not in new or _same(saved[name], new[name]):
            continue
        old, value = saved[name], new[name]
        if name in allowed:
            if not (isinstance(value, (int, float)) and isinstance(old, (int, float)) and value > old):
                raise ConfigError(f"--resume {_flag('extend_steps')}: {_flag(name)} {value} must be larger than "
                                  f"{where}'s {old}")
            changes[name] = (old, value)
            continue
        hint = "; resume with the checkpoint's value, or start a new run in another output folder"
        if name in EXTENDABLE["extend_steps"]:
            hint += " (to train on from this checkpoint: a new run with --init-from)"
        raise ConfigError(f"--resume: {_flag(name)} is {value!r} but {where} was trained with {old!r}{hint}")
    return changes


def finished_noop(finished: bool, changes: Mapping[str, tuple[Any, Any]], where: str) -> str | None:
    """The line to print, and nothing else to do, when a finished run is resumed with no deliberate change; None
    when the run must go on (unfinished, or extended)."""
    if finished and not changes:
        return (f"{where}: the run finished; nothing to do (to train further, start a new run from it with "
                f"--init-from)")
    return None


def record_change(history: list, step: int, changes: Mapping[str, tuple[Any, Any]]) -> list:
    """`history` (the config's list of deliberate changes) with this resume's changes appended as
    {"step": step, "setting": name, "from": old, "to": new}."""
    return list(history) + [{"step": step, "setting": k, "from": a, "to": b} for k, (a, b) in changes.items()]


def resume_guard(meta: Mapping[str, Any], new: Mapping[str, Any], where: str, allow: Iterable[str] = ()
                 ) -> str | None:
    """check_resume against a checkpoint's meta.json ("train_config", "finished"); returns finished_noop's line
    (the caller prints it and trains nothing) or None (train on)."""
    changes = check_resume(meta.get("train_config") or {}, new, allow, where=str(where))
    return finished_noop(bool(meta.get("finished")), changes, str(where))
