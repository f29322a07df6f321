"""Experiment trackers behind `MetricsWriter` (--report-to, Hugging Face's `report_to`): TensorBoard, Weights & Biases
and MLflow each get every record that goes to metrics.jsonl, on rank 0 only.

A record {"step": 120, "split": "eval", "loss": 2.1, ...} becomes the scalars "eval/loss", ... at step 120; a
finetuning record carries "seed" and becomes "seed-1/dev/accuracy", ... (each seed restarts at step 1, so each seed
is its own curve; W&B gets a step metric per seed, "seed-1/step"). "train" is the split of a record without one.

- tensorboard  RUN/tensorboard/ (torch.utils.tensorboard); a resumed run hides the earlier events after its checkpoint
- wandb        `wandb.init(mode=$WANDB_MODE or "offline", dir=RUN)`: offline run files in RUN/wandb/ (upload later
               with `wandb sync`); project $WANDB_PROJECT or "bertforge", name $WANDB_NAME or the run folder
               ("parent/name"); the run's settings as its config. Its service process is stopped at the end when
               this run started it.
- mlflow       `MlflowClient($MLFLOW_TRACKING_URI or file://RUN/mlruns)`: experiment $MLFLOW_EXPERIMENT_NAME or
               "bertforge", run name as for W&B, settings as params, each scalar with its step. MLflow 3 keeps the
               file store in maintenance mode (it refuses one unless MLFLOW_ALLOW_FILE_STORE=true): the variable is
               set only while our own default store is opened; read it back with the same variable set.
A resumed pretraining run (`resume_step`) opens a new W&B / MLflow run named "... (resumed at step N)", so each
tracker run's steps only grow. A tracker that fails while logging is turned off with one warning line (the run
goes on: metrics.jsonl has every record); `close` marks the tracker run failed when an exception is in flight."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Iterable

from bertforge.config.checks import DEFAULT_REPORT_TO
from bertforge.errors import ConfigError
from bertforge.log import get_logger

logger = get_logger(__name__)

# tracker -> (the module it needs, the install command)
PACKAGES = {"tensorboard": ("tensorboard", "pip install 'bertforge[tensorboard]'"),
            "wandb": ("wandb", "pip install 'bertforge[tracking]' (or pip install wandb)"),
            "mlflow": ("mlflow", "pip install 'bertforge[tracking]' (or pip install mlflow-skinny)")}
NOT_A_SCALAR = ("step", "time", "seed", "split")


def installed(tracker: str) -> bool:
    """Whether the package that `tracker` needs can be imported (without importing it)."""
    return importlib.util.find_spec(PACKAGES[tracker][0]) is not None


def select(report_to: Iterable[str], warn: bool = True) -> tuple[str, ...]:
    """The trackers to open for a --report-to value (jsonl and 'none' open none; 'all' every one installed).
    ConfigError, one line naming the package and the pip command, for a named tracker that is not installed;
    the default's tensorboard is left out with a warning line (`warn`: rank 0's) instead (a minimal install still
    trains)."""
    names = tuple(report_to)
    if names == ("all",):
        return tuple(t for t in PACKAGES if installed(t))
    out = []
    for name in names:
        if name in PACKAGES and not installed(name):
            module, command = PACKAGES[name]
            if name == "tensorboard" and names == DEFAULT_REPORT_TO:
                if warn:
                    logger.warning("bertforge: TensorBoard is not installed, metrics go to metrics.jsonl only "
                                   "(%s)", command)
                continue
            raise ConfigError(f"--report-to {name}: the {module} package is not installed; {command}, or leave "
                              f"{name} out of --report-to")
        if name in PACKAGES:
            out.append(name)
    return tuple(out)


def scalars(record: dict) -> tuple[str, dict[str, float]]:
    """(curve prefix, {name: value}) of a metrics record: 'train' / 'eval' / 'dev' ..., with 'seed-N/' in front
    for a finetuning record; the numeric fields other than step, time and seed (bools left out)."""
    prefix = record.get("split", "train")
    if "seed" in record:
        prefix = f"seed-{record['seed']}/{prefix}"
    values = {f"{prefix}/{k}": float(v) for k, v in record.items()
              if k not in NOT_A_SCALAR and isinstance(v, (int, float)) and not isinstance(v, bool)}
    return prefix, values


def run_name(run_dir: Path) -> str:
    """'parent/name' of the run folder (e.g. 'runs/pretrain', 'bert/phase2'), the tracker run's name."""
    path = Path(run_dir).resolve()
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


class TensorBoardReporter:
    name = "tensorboard"

    def __init__(self, run_dir: Path, params: dict, resume_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard hides the earlier run's events after the checkpoint
        self.writer = SummaryWriter(str(run_dir / "tensorboard"),
                                    purge_step=None if resume_step is None else resume_step + 1)

    def log(self, record: dict) -> None:
        for key, value in scalars(record)[1].items():
            self.writer.add_scalar(key, value, record["step"])

    def close(self, failed: bool) -> None:
        self.writer.close()


class WandbReporter:
    name = "wandb"

    def __init__(self, run_dir: Path, params: dict, resume_step: int | None):
        import wandb

        self.wandb = wandb
        self.owns_service = "WANDB_SERVICE" not in os.environ  # set by wandb for the service it starts
        mode = os.environ.get("WANDB_MODE") or "offline"
        name = os.environ.get("WANDB_NAME") or run_name(run_dir)
        if resume_step is not None:
            name += f" (resumed at step {resume_step})"
        settings = {"silent": True}
        if "WANDB_CONSOLE" not in os.environ:
            settings["console"] = "off"  # no wrapping of sys.stdout/stderr (our progress line and one-line errors)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or "bertforge", name=name, dir=str(run_dir),
                              mode=mode, reinit="create_new", config=params, settings=wandb.Settings(**settings))
        self.seeds: set = set()
        where = Path(self.run.dir).parent
        logger.info("wandb: %s run %s in %s%s", mode, self.run.id, where,
                    f" (upload it with `wandb sync {where}`)" if mode == "offline" else "")

    def log(self, record: dict) -> None:
        prefix, values = scalars(record)
        if "seed" not in record:
            self.run.log(values, step=int(record["step"]))
            return
        seed_step = f"seed-{record['seed']}/step"
        if record["seed"] not in self.seeds:  # each seed's curves against its own steps
            self.run.define_metric(seed_step)
            self.run.define_metric(f"seed-{record['seed']}/*", step_metric=seed_step)
            self.seeds.add(record["seed"])
        self.run.log({seed_step: int(record["step"]), **values})

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)
        if self.owns_service:
            self.wandb.teardown()  # stops the service process it started and unsets WANDB_SERVICE


@contextlib.contextmanager
def _environ(name: str, value: str | None):
    """`name` set to `value` (None: left as it is) inside the block, restored after."""
    before = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if value is not None:
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before


class MlflowReporter:
    name = "mlflow"

    def __init__(self, run_dir: Path, params: dict, resume_step: int | None):
        from mlflow import MlflowClient
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        default = not uri
        if default:
            (run_dir / "mlruns").mkdir(parents=True, exist_ok=True)
            uri = (run_dir / "mlruns").resolve().as_uri()
        with _environ("MLFLOW_ALLOW_FILE_STORE", "true" if default else None):
            self.client = MlflowClient(tracking_uri=uri)
            experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "bertforge"
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        name = run_name(run_dir) + ("" if resume_step is None else f" (resumed at step {resume_step})")
        tags = {"bertforge.output_dir": str(Path(run_dir).resolve())}
        if resume_step is not None:
            tags["bertforge.resumed_at_step"] = str(resume_step)
        self.run_id = self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        items = [Param(k, str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + MAX_PARAMS_TAGS_PER_BATCH])
        logger.info("mlflow: run %s in %s", self.run_id, uri)

    def log(self, record: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, int(record["step"]))
                                                    for k, v in scalars(record)[1].items()])

    def close(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


REPORTERS = {"tensorboard": TensorBoardReporter, "wandb": WandbReporter, "mlflow": MlflowReporter}


def open_reporters(names: Iterable[str], run_dir: str | Path, params: dict | None, resume_step: int | None) -> list:
    """One reporter per tracker name (from `select`), in order; a tracker that cannot start raises ConfigError
    naming it and the cause (e.g. an MLFLOW_TRACKING_URI that does not answer)."""
    out = []
    for name in names:
        try:
            out.append(REPORTERS[name](Path(run_dir), dict(params or {}), resume_step))
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - any tracker's own error, as one line
            for reporter in out:
                reporter.close(failed=True)
            raise ConfigError(f"--report-to {name}: could not start a run ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    return out


def failing() -> bool:
    """Whether an exception (other than a clean exit) is in flight: `close` called from a `finally` or `with`."""
    exc = sys.exc_info()[1]
    return exc is not None and not (isinstance(exc, SystemExit) and exc.code in (0, None))
