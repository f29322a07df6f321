"""The Python API, for notebooks and scripts: `bertforge.pretrain`, `bertforge.finetune`, `bertforge.predict` and
`bertforge.evaluate` return results (not exit statuses) and leave no state behind.

Settings go by the command line's names (bertforge.config.names): `bertforge.pretrain(data="runs/data",
steps=100)` is `bertforge pretrain --data runs/data --steps 100`; field names are accepted too (`data_dir`), and so
is a config object, a {name: value} dict or a YAML/JSON file (`bertforge.pretrain("run.yaml", lr=5e-4)`: keywords
override the file). An unknown name raises ConfigError listing the valid ones.

No state left behind: the environment variables the run set (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT, ...) are restored, the process group the run created is destroyed (one it found is kept), and torch's
CPU random state and thread count are put back. Under `torchrun` every rank calls the same function.

Each function is a thin layer over the library entry points the commands call: pretraining
`bertforge.training.phases.phase_results`, finetuning `bertforge.finetuning.run.run_classify / run_ner / run_mlm`,
inference `bertforge.finetuning.predict.predict / evaluate`."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertforge.config.finetune import ClassifyConfig, InferenceConfig, MlmConfig, NerConfig
from bertforge.config.names import PHASE2, load, normalize, schema
from bertforge.config.pretrain import PretrainConfig
from bertforge.errors import ConfigError

TASKS = {"classify": (ClassifyConfig, "run_classify"), "ner": (NerConfig, "run_ner"), "mlm": (MlmConfig, "run_mlm")}


@dataclass
class PretrainResult:
    """What `pretrain` returns: the last phase's outcome, and every phase's."""

    output_dir: str
    status: str             # 'finished' or 'preempted' (a SIGTERM checkpoint was saved; resume=True continues)
    step: int               # optimizer steps done in the last phase
    eval: dict              # held-out metrics at the end (mlm_acc, loss, nsp_acc / sop_acc, ...)
    train: dict             # the last training metrics line
    config: dict            # the resolved settings, {field: value}
    phases: list = field(default_factory=list)  # bertforge.training.trainer.RunResult of each phase run


# ---- settings -------------------------------------------------------------------------------------------------
def _settings(command: str, config: Any, settings: dict, caller: str) -> tuple[dict, frozenset]:
    """({field: value}, the names given) from a config object, a dict or a file path, under `settings`."""
    sch = schema(command)
    if config is None:
        base = {}
    elif dataclasses.is_dataclass(config) and hasattr(config, "to_flat"):
        base = config.to_flat()
    elif isinstance(config, dict):
        base = normalize(config, sch, caller, list_all=True)
    elif isinstance(config, (str, os.PathLike)):
        base = load(config, sch)
    else:
        raise ConfigError(f"{caller}: config must be a config object, a dict of settings or a YAML/JSON file path, "
                          f"got {type(config).__name__}")
    given = normalize(settings, sch, caller, list_all=True)
    named = set(given) | (set(base) if not dataclasses.is_dataclass(config) else set())
    if isinstance(base.get("model_overrides"), dict) and isinstance(given.get("model_overrides"), dict):
        given["model_overrides"] = {**base["model_overrides"], **given["model_overrides"]}
    return {**base, **given}, frozenset(named)


# ---- no state left behind -------------------------------------------------------------------------------------
@contextlib.contextmanager
def isolated_run():
    """Run a library call and put the process back: environment variables, the default process group (destroyed
    when the call created it, through bertforge.deepspeed.destroy_distributed), torch's CPU RNG state and thread
    count."""
    import torch
    import torch.distributed as dist

    env = dict(os.environ)
    had_group = dist.is_available() and dist.is_initialized()
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    failed = True
    try:
        yield
        failed = False
    finally:
        if not had_group and dist.is_available() and dist.is_initialized():
            from bertforge.deepspeed import destroy_distributed

            destroy_distributed(barrier=not failed)  # after a failure the other ranks may never reach a barrier
        for key in [k for k in os.environ if k not in env]:
            del os.environ[key]
        for key, value in env.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
        torch.set_rng_state(rng)
        torch.set_num_threads(threads)


# ---- the calls ------------------------------------------------------------------------------------------------
def pretrain(config: Any = None, /, **settings: Any) -> PretrainResult:
    """Pretrain (MLM + NSP / SOP / alone) as `bertforge pretrain` does. `config`: a PretrainConfig, a dict of
    settings or a YAML/JSON file (a run's RUN/config.json too); keywords are flag names (`data`, `steps`,
    `micro_batch`, `model={'num_hidden_layers': 2}`, `phase2_steps`, ...) and override it. Returns a PretrainResult;
    ConfigError / DataError / CheckpointError (bertforge.errors.UserError) on bad input."""
    values, named = _settings("pretrain", config, settings, "bertforge.pretrain()")
    phase2 = {PHASE2[k][0]: values.pop(k) for k in list(values) if k in PHASE2}
    cfg = PretrainConfig.from_flat(values)
    from bertforge.training.phases import phase_results

    with isolated_run():
        results = phase_results(cfg, named - set(PHASE2), phase2)
    if not results:  # every phase finished in an earlier run
        return PretrainResult(str(cfg.run.output_dir), "finished", 0, {}, {}, cfg.to_flat())
    phase, last = results[-1]
    return PretrainResult(output_dir=phase.run.output_dir, status=last.status, step=last.step, eval=dict(last.eval),
                          train=dict(last.train), config=cfg.to_flat(), phases=[r for _, r in results])


def finetune(task: str, config: Any = None, /, **settings: Any) -> dict:
    """Finetune as `bertforge finetune TASK` does; `task` is 'classify', 'ner' or 'mlm'. `config`: the task's config
    object, a dict of settings or a YAML/JSON file; keywords are flag names (`model`, `out`, `data` / `train` /
    `dev` / `test`, `epochs`, `seeds=(1, 2)`, ...) and override it. Returns the summary (summary.json's content:
    dev / test metrics as mean and std over seeds, each seed's run, status)."""
    if task not in TASKS:
        raise ConfigError(f"bertforge.finetune(): unknown task {task!r}; give one of {', '.join(TASKS)}")
    config_cls, run_name = TASKS[task]
    values, named = _settings(f"finetune {task}", config, settings, f"bertforge.finetune({task!r})")
    cfg = config_cls.from_flat(values)
    from bertforge.finetuning import run as library

    with isolated_run():
        return getattr(library, run_name)(cfg, explicit=named)


def _inference(model: str | os.PathLike, input: str | os.PathLike, settings: dict, caller: str) -> InferenceConfig:
    values, _ = _settings("predict", None, settings, caller)
    return InferenceConfig(**{**values, "model": str(model), "input": str(input)})


def predict(model: str | os.PathLike, input: str | os.PathLike, /, **settings: Any) -> list[dict] | int:
    """Predictions of the finetuned model directory `model` (e.g. OUT/seed-1) for every input of the file `input`,
    as `bertforge predict` makes them: a list of dicts in input order (classification: label and probabilities;
    token classification: tags and entity spans). With `out=PATH` they are written there as JSONL instead (any
    size, flat memory) and the number written is returned. Keywords: `max_seq_length`, `micro_batch`,
    `text_column`, `precision`, ..."""
    from bertforge.finetuning.predict import predict as library

    if settings.get("out"):
        with isolated_run():
            return library(_inference(model, input, settings, "bertforge.predict()"), echo=lambda _: None)
    with tempfile.TemporaryDirectory(prefix="bertforge-predict-") as tmp:
        out = Path(tmp) / "predictions.jsonl"
        config = _inference(model, input, {**settings, "out": str(out)}, "bertforge.predict()")
        with isolated_run():
            library(config, echo=lambda _: None)
        with open(out, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]


def evaluate(model: str | os.PathLike, input: str | os.PathLike, /, **settings: Any) -> dict:
    """The metrics of the finetuned model directory `model` on the labelled file `input`, as `bertforge evaluate`
    computes them (classification: accuracy, macro-F1, per class, confusion matrix; NER: entity precision / recall
    / F1 overall and per type). Keywords as for `predict`, plus `predictions=PATH`."""
    from bertforge.finetuning.predict import evaluate as library

    with isolated_run():
        return library(_inference(model, input, settings, "bertforge.evaluate()"), echo=lambda _: None)
