"""Crash safety and failure handling: SIGKILL during a checkpoint write, SIGTERM (preemption), non-finite losses,
and a rank that dies."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.training.conftest import REPO, run_worker, worker_cmd, worker_env


def _train_losses(run_dir: Path) -> dict[int, float]:
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["split"] == "train":
            out[rec["step"]] = rec["loss"]  # a resumed run rewrites the steps after its checkpoint
    return out


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"worker exited {proc.returncode} early:\n{proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.1)


def test_sigkill_during_checkpoint_write_keeps_previous(tmp_path):
    reference = tmp_path / "reference"
    run_worker("run", reference, 9)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(worker_cmd("run", killed, 9), env=worker_env(PAUSE_AT_SAVE=6), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(killed / "saving", proc, timeout=180)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    ckpts = killed / "run" / "checkpoints"
    assert (ckpts / ".tmp-step_00000006").is_dir()  # the half-written one
    assert not (ckpts / "step_00000006").exists()
    assert (ckpts / "latest").read_text().strip() == "step_00000003"

    run_worker("run", killed, 9)  # resumes from step 3
    assert sorted(p.name for p in ckpts.iterdir() if p.name.startswith("step_")) == [
        "step_00000003", "step_00000006", "step_00000009"]
    assert not list(ckpts.glob(".tmp-*"))
    assert _train_losses(killed / "run") == _train_losses(reference / "run")  # exact, steps 1-9


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "bertforge.cli", "pretrain", "--synthetic-vocab", "512", "--model", "hidden_size=64",
            "--model", "intermediate_size=128", "--max-seq-length", "32", "--micro-batch", "4", "--global-batch", "8",
            "--dropout", "0", "--log-every", "1", "--eval-every", "0", "--eval-samples", "8", "--no-progress",
            "--no-export-hf", *args]


def test_sigterm_saves_then_resume_finishes(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_cli("--output-dir", str(out), "--steps", "400", "--save-every", "0"), env=worker_env(),
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 180
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "SIGTERM: checkpoint saved at step" in err
    tag = (out / "checkpoints" / "latest").read_text().strip()
    step = int(tag.split("_")[1])
    assert step >= 3 and max(_train_losses(out)) == step

    proc = subprocess.run(_cli("--output-dir", str(out), "--steps", "400", "--save-every", "0", "--resume"),
                          env=worker_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from" in proc.stderr and max(_train_losses(out)) == 400


def test_nonfinite_loss_skips_step_and_stops_after_limit(tmp_path):
    # micro 4, global 8, 1 rank: 2 forward calls per step; call 3 = step 2's first micro batch
    run_worker("nan", tmp_path / "one", NAN_CALLS="3", STEPS=6, MAX_SKIPPED=3)
    assert json.loads((tmp_path / "one" / "nan.json").read_text()) == {"skipped": 1}
    lines = [json.loads(x) for x in (tmp_path / "one" / "run" / "metrics.jsonl").read_text().splitlines()]
    train = {x["step"]: x for x in lines if x["split"] == "train"}
    assert 2 not in train  # a skipped step contributes no metrics
    # warmup 2 of 6 steps: lr factors 0.5, 1, 1, 0.75, ...; the skipped step did not advance the schedule
    assert [train[s]["lr"] for s in (1, 3, 4)] == [1e-3, 2e-3, 2e-3]
    assert train[3]["skipped_steps"] == 1

    run_worker("nan", tmp_path / "many", NAN_CALLS=",".join(map(str, range(5, 100))), STEPS=20, MAX_SKIPPED=3)
    error = json.loads((tmp_path / "many" / "nan.json").read_text())["error"]
    assert "stopped at step 5: 3 steps in a row had a non-finite loss" in error and "\n" not in error


def test_dead_rank_takes_the_job_down(tmp_path):
    start = time.monotonic()
    proc = run_worker("die", tmp_path, ranks=2, check=False, timeout=180)
    assert proc.returncode != 0
    assert time.monotonic() - start < 150  # no hang: the survivor fails its next collective or is stopped
    assert "exitcode  : 17" in proc.stderr or "exit code 17" in proc.stderr or "rank 0" in proc.stderr, \
        proc.stderr[-3000:]
