"""Worker for the fault-tolerance tests: `python _reliability_worker.py MODE OUT [ARGS]` as a plain process, under
`torchrun` or under DeepSpeed's `deepspeed` launcher. Synthetic batches, the tiny model of tests/training/_worker.py.
Modes:
  reshape JOB...   each JOB is NAME:STAGE or NAME:STAGE:FROM, run in order: 6 fp32 steps (global batch 12, micro 2,
                   checkpoint at 3) at ZeRO STAGE in OUT/NAME; with FROM, OUT/FROM's step-3 checkpoint is copied in and
                   resumed (possibly written by another number of ranks); LAMB when NAME starts with 'lamb', else
                   AdamW. OUT/NAME/result.json (rank 0) = {losses,
                   eval}; OUT/NAME/visits_rank{R}.json = the global micro-batch indices this rank consumed
  preempt STEPS    `bertforge pretrain`'s path (run_phases) for STEPS steps, logged every 1000 steps, no periodic
                   checkpoint; rank 0 writes OUT/steps (steps done) after each step; every rank writes
                   OUT/exit_rank{R} with its exit status; resumes when OUT/run has checkpoints"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DS_ACCELERATOR", "cpu")

from tests.training._worker import VOCAB, config, factory, losses  # noqa: E402
from bertforge import distributed as D  # noqa: E402


class RecordingSource:
    """A synthetic source that records the global index (position x world + rank) of every micro batch it serves."""

    def __init__(self, cfg, rank, world, log: list):
        self.inner, self.log, self.rank, self.world = factory(cfg, rank, world), log, rank, world

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def next_batch(self):
        self.log.append(self.inner.position * self.world + self.rank)
        return self.inner.next_batch()


def mode_reshape(out: Path, *jobs: str) -> None:
    from bertforge import deepspeed as ds
    from bertforge.training.trainer import pretrain

    ds.init_distributed(60)  # the barriers below must wait for rank 0's copies
    for job in jobs:
        name, stage, *source = job.split(":")
        run = out / name
        if source and D.rank() == 0:
            (run / "checkpoints").mkdir(parents=True)
            shutil.copytree(out / source[0] / "checkpoints" / "step_00000003", run / "checkpoints" / "step_00000003")
        D.barrier()
        visits: list = []
        result = pretrain(config(run, zero_stage=int(stage), global_batch=12, prefetch=0, eval_samples=10,
                                 resume=bool(source), optimizer="lamb" if name.startswith("lamb") else "adamw"),
                          source_factory=lambda cfg, rank, world: RecordingSource(cfg, rank, world, visits))
        (run / f"visits_rank{D.rank()}.json").write_text(json.dumps(visits))
        if D.rank() == 0:
            (run / "result.json").write_text(json.dumps({"losses": losses(run), "eval": result.eval}))
        D.barrier()


def mode_preempt(out: Path, steps: str) -> None:
    from bertforge.training import trainer
    from bertforge.training.phases import run_phases

    real_step, real_finish = trainer.Trainer.train_step, D.finish

    def train_step(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        if D.rank() == 0:
            (out / "steps").write_text(str(self.step + 1))
        return result

    def finish(code: int) -> None:
        (out / f"exit_rank{D.rank()}").write_text(str(code))
        real_finish(code)

    trainer.Trainer.train_step = train_step
    D.finish = finish
    run = out / "run"
    cfg = config(run, synthetic_vocab=VOCAB, steps=int(steps), log_every=1000, save_every=0,
                 resume=(run / "checkpoints").is_dir())
    sys.exit(run_phases(cfg, frozenset(), {}))


if __name__ == "__main__":
    mode, out, *rest = sys.argv[1:]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    D.prepare_env()
    try:
        {"reshape": mode_reshape, "preempt": mode_preempt}[mode](out, *rest)
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            raise
        print(f"worker rank {D.rank()} failed: {D.describe_failure(exc)}", file=sys.stderr, flush=True)
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    D.finish(0)
