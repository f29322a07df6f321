"""Training worker for the multi-process tests: `python _worker.py MODE OUT [ARGS]` as a plain process or under
`torchrun --nproc_per_node 2`. Runs bertforge.training.trainer.pretrain on synthetic batches with a tiny model and writes
what the test checks to OUT (rank 0). Modes:
  equal STAGES PRECISIONS   per (stage, precision): a full run (6 steps, checkpoint at 3) and a run resumed from that
                            checkpoint in a fresh directory; results.json = {name: {full, resumed}: [losses]}
  run STEPS                 one fp32 run (ZeRO stage $ZERO, default 0) of STEPS steps in OUT/run (resumes if it has
                            checkpoints); with PAUSE_AT_SAVE=N the save of step N pauses forever after the shards
                            are written
  nan                       non-finite losses injected at given micro batches
  die                       rank 1 exits abruptly at step 3
  corpus DATA TOK LAYOUTS   real prepared data (CorpusSource): per layout (padded, unpadded, packed, and the same
                            with -device: --masking device) a 6-step fp32 run and a run resumed from its step-3
                            checkpoint; corpus.json = {layout: {full, resumed, train_keys, eval_keys}}; env OBJECTIVE
                            (default mlm+nsp), ZERO (default 0)
  window                    6 steps logged every step and every 3 steps; window.json = {1: [lines], 3: [lines]}
  resume_window             6 steps logged every 4, checkpoint at 3; the full run, a resumed one and one resumed
                            from the checkpoint stripped of its "log_window"; resume_window.json
  compile                   4 unpadded fp32 steps eager (steps 2-3 profiled) and under --compile;
                            compile.json = {eager, compiled}
  lamb STAGES               20 fp32 LAMB steps per ZeRO stage (a stage 'Nnaive': stage N with the flat partitions
                            left unregistered, i.e. one trust ratio per partition); lamb.json = {stage: [losses]}
  dropout LAYOUTS STEPS [FROM]  per layout (padded, unpadded, packed; suffix -noids: batches without dropout ids,
                            i.e. torch's per-rank generator) STEPS fp32 steps at dropout 0.1 (checkpoint at
                            STEPS // 2) and a run resumed from that checkpoint;
                            with FROM (another dropout run's OUT), FROM's checkpoint resumed here too (e.g. written
                            by another number of ranks); dropout.json = {layout: {full, resumed[, cross]}}"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from bertforge import distributed as D  # noqa: E402
from bertforge.config.pretrain import PretrainConfig  # noqa: E402
from bertforge.data.synthetic import SyntheticSource  # noqa: E402

MODEL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
             max_position_embeddings=64)
VOCAB = 512


def factory(cfg, rank, world):
    return SyntheticSource(VOCAB, cfg.batch.max_seq_length, cfg.batch.micro_batch, rank, world, seed=cfg.run.seed,
                           mask=cfg.masking.masking == "host", pack=cfg.batch.pack)


def config(out: Path, **kw) -> PretrainConfig:
    base = dict(output_dir=str(out), preset="tiny", model_overrides=MODEL, max_seq_length=32, micro_batch=2,
                global_batch=8, steps=6, lr=2e-3, warmup_steps=2, dropout=0.0, log_every=1, eval_every=0,
                eval_samples=4, save_every=3, progress=False, export_hf=False, dist_timeout_s=60)
    base.update(kw)
    return PretrainConfig.from_flat(base)


def losses(run_dir: Path) -> list[float]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [x["loss"] for x in lines if x["split"] == "train"]


def mode_equal(out: Path, stages: str, precisions: str) -> None:
    from bertforge.training.trainer import pretrain

    results = {}
    for stage in map(int, stages.split(",")):
        for precision in precisions.split(","):
            name = f"z{stage}_{precision}"
            full, resumed = out / name / "full", out / name / "resumed"
            pretrain(config(full, zero_stage=stage, precision=precision), source_factory=factory)
            if D.rank() == 0:
                (resumed / "checkpoints").mkdir(parents=True)
                shutil.copytree(full / "checkpoints" / "step_00000003", resumed / "checkpoints" / "step_00000003")
            D.barrier()
            pretrain(config(resumed, zero_stage=stage, precision=precision, resume=True), source_factory=factory)
            if D.rank() == 0:
                results[name] = {"full": losses(full), "resumed": losses(resumed)}
    if D.rank() == 0:
        (out / "results.json").write_text(json.dumps(results))


def mode_run(out: Path, steps: str) -> None:
    from bertforge.train import checkpoint
    from bertforge.training.trainer import pretrain

    pause_at = int(os.environ.get("PAUSE_AT_SAVE", "0"))
    real_save = checkpoint.ds.save

    def save(engine, root, tag):
        real_save(engine, root, tag)
        if pause_at and tag.endswith(f"step_{pause_at:08d}"):
            (out / "saving").write_text(tag)
            time.sleep(3600)  # the test SIGKILLs us here: shards written, checkpoint not yet complete

    checkpoint.ds.save = save
    run = out / "run"
    resume = (run / "checkpoints").is_dir()
    cfg = config(run, steps=int(steps), save_every=3, resume=resume, zero_stage=int(os.environ.get("ZERO", 0)))
    pretrain(cfg, source_factory=factory)


def mode_nan(out: Path) -> None:
    from bertforge.heads import BertForPreTraining
    from bertforge.errors import TrainingError
    from bertforge.training.trainer import pretrain

    bad = {int(x) for x in os.environ["NAN_CALLS"].split(",")}
    real_forward = BertForPreTraining.forward
    calls = {"n": 0}

    def forward(self, *args, **kwargs):
        out_ = real_forward(self, *args, **kwargs)
        if self.training:
            calls["n"] += 1
            if calls["n"] in bad:
                out_.loss = out_.loss * float("nan")
        return out_

    BertForPreTraining.forward = forward
    report = {}
    try:
        r = pretrain(config(out / "run", steps=int(os.environ.get("STEPS", 6)), micro_batch=4,
                            max_skipped_steps=int(os.environ.get("MAX_SKIPPED", 3))), source_factory=factory)
        report["skipped"] = r.skipped_steps
    except TrainingError as exc:
        report["error"] = str(exc)
    if D.rank() == 0:
        (out / "nan.json").write_text(json.dumps(report))


def mode_die(out: Path) -> None:
    from bertforge.training import trainer

    real = trainer.model_inputs
    calls = {"n": 0}

    def model_inputs(*args, **kwargs):
        calls["n"] += 1
        if D.rank() == 1 and calls["n"] == 5:
            os._exit(17)  # a crash without any goodbye
        return real(*args, **kwargs)

    trainer.model_inputs = model_inputs
    trainer.pretrain(config(out / "run", steps=50, dist_timeout_s=20), source_factory=factory)


def mode_corpus(out: Path, data: str, tok: str, layouts: str) -> None:
    from bertforge.training.trainer import pretrain

    flags = {"padded": {}, "unpadded": {"unpadded": True}, "packed": {"unpadded": True, "pack": True},
             "padded-device": {"masking": "device"}, "unpadded-device": {"unpadded": True, "masking": "device"},
             "packed-device": {"unpadded": True, "pack": True, "masking": "device"}}
    results = {}
    for layout in layouts.split(","):
        full, resumed = out / layout / "full", out / layout / "resumed"
        kw = dict(data_dir=data, tokenizer=tok, max_seq_length=64, eval_fraction=0.05, zero_stage=int(os.environ.get(
            "ZERO", 0)), objective=os.environ.get("OBJECTIVE", "mlm+nsp"), **flags[layout])
        pretrain(config(full, **kw))
        if D.rank() == 0:
            (resumed / "checkpoints").mkdir(parents=True)
            shutil.copytree(full / "checkpoints" / "step_00000003", resumed / "checkpoints" / "step_00000003")
        D.barrier()
        pretrain(config(resumed, resume=True, **kw))
        if D.rank() == 0:
            lines = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
            results[layout] = {"full": losses(full), "resumed": losses(resumed),
                               "train_keys": sorted({k for x in lines if x["split"] == "train" for k in x}),
                               "eval_keys": sorted({k for x in lines if x["split"] == "eval" for k in x})}
    if D.rank() == 0:
        (out / "corpus.json").write_text(json.dumps(results))


def mode_window(out: Path) -> None:
    """The same 6 steps logged every step and every 3 steps: the 3-step lines must be the means of the 1-step ones."""
    from bertforge.training.trainer import pretrain

    results = {}
    for every in (1, 3):
        run = out / f"every{every}"
        pretrain(config(run, log_every=every, save_every=0), source_factory=factory)
        if D.rank() == 0:
            lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            results[every] = [x for x in lines if x["split"] == "train"]
    if D.rank() == 0:
        (out / "window.json").write_text(json.dumps(results))


def mode_resume_window(out: Path) -> None:
    """Steps 1-6 logged every 4 steps, checkpoint at step 3 (inside the first window): the full run, a run resumed
    from its step-3 checkpoint, and one resumed from that checkpoint without meta.json's "log_window" (an older
    checkpoint); resume_window.json = {name: [train lines]}."""
    from bertforge.training.trainer import pretrain

    kw = dict(log_every=4, save_every=3)
    full = out / "full"
    pretrain(config(full, **kw), source_factory=factory)
    results = {}
    for name in ("resumed", "old"):
        run = out / name
        if D.rank() == 0:
            tag = run / "checkpoints" / "step_00000003"
            shutil.copytree(full / "checkpoints" / "step_00000003", tag)
            if name == "old":
                meta = json.loads((tag / "meta.json").read_text())
                results["saved_window"] = meta.pop("log_window", None)
                (tag / "meta.json").write_text(json.dumps(meta))
        D.barrier()
        pretrain(config(run, resume=True, **kw), source_factory=factory)
    if D.rank() == 0:
        for name in ("full", "resumed", "old"):
            lines = [json.loads(x) for x in (out / name / "metrics.jsonl").read_text().splitlines()]
            results[name] = [x for x in lines if x["split"] == "train"]
        (out / "resume_window.json").write_text(json.dumps(results))


def mode_compile(out: Path) -> None:
    from bertforge.training.trainer import pretrain

    results = {}
    for name, flag in (("eager", False), ("compiled", True)):
        profile = dict(profile_steps=2, profile_start=1) if not flag else {}  # the eager run is also profiled
        pretrain(config(out / name, steps=4, unpadded=True, compile=flag, save_every=0, **profile),
                 source_factory=factory)
        results[name] = losses(out / name)
    (out / "compile.json").write_text(json.dumps(results))


def mode_lamb(out: Path, stages: str) -> None:
    from bertforge import parallelize
    from bertforge.training.trainer import pretrain

    real = parallelize.apply_lamb_partitions
    results = {}
    for name in stages.split(","):
        parallelize.apply_lamb_partitions = (lambda engine, optimizer: 0) if name.endswith("naive") else real
        run = out / f"z{name}"
        pretrain(config(run, zero_stage=int(name[0]), optimizer="lamb", lr=1e-2, steps=20, save_every=0,
                        warmup_steps=3), source_factory=factory)
        results[name] = losses(run)
    if D.rank() == 0:
        (out / "lamb.json").write_text(json.dumps(results))


def _without_dropout_ids(cfg, rank, world):
    source = factory(cfg, rank, world)
    source._batch = source._layout  # the same batches without their dropout ids
    return source


def mode_dropout(out: Path, layouts: str, steps: str, from_dir: str | None = None) -> None:
    from bertforge.training.trainer import pretrain

    flags = {"padded": {}, "unpadded": {"unpadded": True}, "packed": {"unpadded": True, "pack": True}}
    n = int(steps)
    tag = f"step_{n // 2:08d}"
    results = {}
    for layout in layouts.split(","):
        kw = dict(flags[layout.removesuffix("-noids")], dropout=0.1, steps=n, save_every=n // 2, warmup_steps=3)
        source_factory = _without_dropout_ids if layout.endswith("-noids") else factory
        runs = {"full": None, "resumed": out / layout / "full"}
        if from_dir:
            runs["cross"] = Path(from_dir) / layout / "full"
        for name, source in runs.items():
            run = out / layout / name
            if source is not None and D.rank() == 0:
                (run / "checkpoints").mkdir(parents=True)
                shutil.copytree(source / "checkpoints" / tag, run / "checkpoints" / tag)
            D.barrier()
            pretrain(config(run, resume=source is not None, **kw), source_factory=source_factory)
        if D.rank() == 0:
            results[layout] = {name: losses(out / layout / name) for name in runs}
    if D.rank() == 0:
        (out / "dropout.json").write_text(json.dumps(results))


if __name__ == "__main__":
    mode, out, *rest = sys.argv[1:]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    D.prepare_env()
    try:
        {"equal": mode_equal, "run": mode_run, "nan": mode_nan, "die": mode_die, "corpus": mode_corpus,
         "compile": mode_compile, "window": mode_window, "resume_window": mode_resume_window,
         "lamb": mode_lamb, "dropout": mode_dropout}[mode](out, *rest)
    except BaseException as exc:
        print(f"worker rank {D.rank()} failed: {D.describe_failure(exc)}", file=sys.stderr, flush=True)
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    D.finish(0)
