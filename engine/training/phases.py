"""One or two pretraining phases (BERT's recipe: phase 1 at 128 tokens, phase 2 at 512 from phase 1's weights),
and the process exit that follows (multi-rank workers leave through barrier + os._exit: distributed.finish)."""
from __future__ import annotations

from pathlib import Path

from bertforge.config.pretrain import PretrainConfig
from bertforge.errors import CheckpointError, ConfigError
from bertforge import distributed as D
from bertforge.train.checkpoint import checkpoint_meta, latest_tag, resolve_checkpoint
from bertforge.training.trainer import RunResult, pretrain

PHASE2_FIELDS = ("steps", "max_seq_length", "micro_batch", "global_batch", "lr", "warmup_steps", "token_budget")


def _finished(run_dir: Path) -> bool:
    try:
        ckpt = resolve_checkpoint(run_dir)
    except CheckpointError:
        return False
    return bool(checkpoint_meta(ckpt).get("finished"))


def phase_configs(cfg: PretrainConfig, phase2: dict) -> list[PretrainConfig]:
    """[cfg] alone, or [phase 1, phase 2] when `phase2` holds any of PHASE2_FIELDS (it needs steps or
    token_budget): phase 1 into OUTPUT/phase1, phase 2 (max_seq_length 512 unless given) into OUTPUT/phase2 from
    phase 1's weights."""
    if not phase2:
        return [cfg]
    if cfg.run.extend_steps:
        raise ConfigError(f"--extend-steps {cfg.run.extend_steps} lengthens one run, not the two-phase recipe; "
                          f"resume the phase's own folder ({Path(cfg.run.output_dir) / 'phase2'} or phase1) as a "
                          f"single run with --output-dir, its own settings and --extend-steps")
    unknown = set(phase2) - set(PHASE2_FIELDS)
    if unknown:
        raise ConfigError(f"unknown phase-2 setting(s): {', '.join(sorted(unknown))}")
    if "steps" not in phase2 and "token_budget" not in phase2:
        raise ConfigError("the two-phase recipe needs --phase2-steps or --phase2-tokens")
    root = Path(cfg.run.output_dir)
    first = cfg.replace(output_dir=str(root / "phase1"), export_hf=False)
    changes = {"output_dir": str(root / "phase2"), "init_from": str(root / "phase1"), "max_seq_length": 512,
               "warmup_steps": -1, "token_budget": 0, **phase2}
    return [first, cfg.replace(**changes)]


def run_phases(cfg: PretrainConfig, explicit: frozenset, phase2: dict) -> int:
    """Run the phases; returns (and exits multi-rank workers with) 0, or 143 after a SIGTERM checkpoint."""
    results = phase_results(cfg, explicit, phase2)
    code = D.PREEMPTED if results and results[-1][1].status == "preempted" else 0
    D.finish(code)
    return code


def phase_results(cfg: PretrainConfig, explicit: frozenset, phase2: dict) -> list[tuple[PretrainConfig, RunResult]]:
    """Run the phases (a finished phase of a two-phase run is skipped); returns (config, RunResult) of each phase
    run, up to and including a preempted one."""
    phases = phase_configs(cfg, phase2)
    results = []
    for i, phase in enumerate(phases):
        run_dir = Path(phase.run.output_dir)
        if len(phases) > 1:
            if _finished(run_dir):
                D.log0(f"phase {i + 1}: {run_dir} already finished, skipping")
                continue
            resume = cfg.run.resume and latest_tag(run_dir / "checkpoints") is not None
            phase = phase.replace(resume=resume)
            D.log0(f"phase {i + 1}/{len(phases)}: max_seq_length {phase.batch.max_seq_length}, "
                   f"{phase.total_steps()} steps -> {run_dir}")
        results.append((phase, pretrain(phase, explicit)))
        if results[-1][1].status == "preempted":
            break
    return results
