"""One or two pretraining phases (BERT's recipe: phase 1 at 128 tokens, phase 2 at 512 from phase 1's weights),
and the process exit that follows (TOOLCHAIN.md: multi-rank workers leave through barrier + os._exit)."""
from __future__ import annotations

from pathlib import Path

from engine.training import distributed as D
from engine.training.config import TrainConfig
from engine.training.loop import PREEMPTED, pretrain
from engine.training.weights import is_checkpoint, resolve_checkpoint


def _finished(run_dir: Path) -> bool:
    try:
        ckpt = resolve_checkpoint(run_dir)
    except ValueError:
        return False
    import json

    return bool(json.loads((ckpt / "meta.json").read_text(encoding="utf-8")).get("finished"))


def phase_configs(cfg: TrainConfig, phase2: dict) -> list[TrainConfig]:
    if not phase2:
        return [cfg]
    root = Path(cfg.output_dir)
    first = cfg.replace(output_dir=str(root / "phase1"), export_hf=False)
    changes = {"output_dir": str(root / "phase2"), "init_from": str(root / "phase1"),
               "seq_len": phase2.get("seq_len", 512), "warmup_steps": phase2.get("warmup_steps", -1)}
    for key in ("steps", "micro_batch", "global_batch", "lr", "token_budget"):
        if key in phase2:
            changes[key] = phase2[key]
    if "steps" not in phase2 and "token_budget" not in phase2:
        raise ValueError("the two-phase recipe needs --phase2-steps or --phase2-tokens")
    if "token_budget" not in phase2:
        changes["token_budget"] = 0
    return [first, cfg.replace(**changes)]


def run_phases(cfg: TrainConfig, explicit: frozenset, phase2: dict) -> int:
    phases = phase_configs(cfg, phase2)
    code = 0
    for i, phase in enumerate(phases):
        run_dir = Path(phase.output_dir)
        if len(phases) > 1:
            if _finished(run_dir):
                D.log0(f"phase {i + 1}: {run_dir} already finished, skipping")
                continue
            resume = cfg.resume and (run_dir / "checkpoints").is_dir() and any(
                is_checkpoint(p) for p in (run_dir / "checkpoints").glob("step_*"))
            phase = phase.replace(resume=resume)
            D.log0(f"phase {i + 1}/{len(phases)}: seq_len {phase.seq_len}, {phase.total_steps()} steps -> {run_dir}")
        result = pretrain(phase, explicit)
        if result.status == "preempted":
            code = PREEMPTED
            break
    D.finish(code)
    return code
