"""Corrupt checkpoints: every file's size and CRC-32 are recorded in meta.json; --resume verifies the newest
checkpoint (each rank a share of the files), sets a damaged one aside with one line naming the bad file, continues
from the newest complete one (the same losses as the uninterrupted run), and fails with one line when none verifies.
metrics.jsonl keeps one line per step across the resume."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bertforge.errors import CheckpointError
from bertforge.train.checkpoint import (CheckpointManager, file_crc32, record_files, verify_checkpoint)
from bertforge.train.metrics import cut_metrics
from tests.training.conftest import REPO, run_worker, worker_env


# ---- unit: records, verification, fallback (no training) -----------------------------------------------------------
def _fake_checkpoint(root: Path, step: int, files: dict[str, bytes]) -> Path:
    ckpt = root / f"step_{step:08d}"
    ckpt.mkdir(parents=True)
    for name, data in files.items():
        (ckpt / name).parent.mkdir(parents=True, exist_ok=True)
        (ckpt / name).write_bytes(data)
    (ckpt / "meta.json").write_text(json.dumps({"step": step, "world_size": 1, "files": record_files(ckpt)}))
    return ckpt


def _flip_byte(path: Path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if at is None else at
    data[at] ^= 0x40
    path.write_bytes(bytes(data))


FILES = {"mp_rank_00_model_states.pt": b"m" * 1000, "zero_pp_rank_0_optim_states.pt": bytes(range(256)) * 7,
         "trainer_state_rank0.pt": b"t" * 33, "sub/extra.bin": b"x"}


def test_verification_names_the_bad_file(tmp_path):
    ckpt = _fake_checkpoint(tmp_path, 3, FILES)
    assert verify_checkpoint(ckpt) is None
    meta = json.loads((ckpt / "meta.json").read_text())
    assert set(meta["files"]) == set(FILES) and meta["files"]["sub/extra.bin"]["bytes"] == 1
    assert meta["files"]["trainer_state_rank0.pt"]["crc32"] == file_crc32(ckpt / "trainer_state_rank0.pt")

    _flip_byte(ckpt / "zero_pp_rank_0_optim_states.pt")  # same size, other bytes
    problem = verify_checkpoint(ckpt)
    assert "zero_pp_rank_0_optim_states.pt: CRC-32" in problem and "\n" not in problem
    (ckpt / "mp_rank_00_model_states.pt").write_bytes(b"m" * 10)
    assert verify_checkpoint(ckpt).endswith("mp_rank_00_model_states.pt: 10 bytes, meta.json records 1000")
    (ckpt / "mp_rank_00_model_states.pt").unlink()
    assert verify_checkpoint(ckpt).endswith("mp_rank_00_model_states.pt: missing")
    (ckpt / "meta.json").write_text('{"step": 3, "files": {')  # cut short
    assert "meta.json: unreadable" in verify_checkpoint(ckpt)


def test_ranks_share_the_files_once_each(tmp_path):
    ckpt = _fake_checkpoint(tmp_path, 3, FILES)
    for world in (1, 2, 3, 5):
        shares = [record_files(ckpt, r, world) for r in range(world)]
        assert sorted(n for s in shares for n in s) == sorted(FILES)
    # a damaged file is reported by exactly the rank whose share holds it
    _flip_byte(ckpt / "trainer_state_rank0.pt")
    found = [verify_checkpoint(ckpt, r, 3) for r in range(3)]
    assert sum(p is not None for p in found) == 1


def test_resume_falls_back_to_the_newest_checkpoint_that_verifies(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (3, 6, 9):
        _fake_checkpoint(root, step, FILES)
    (root / "latest").write_text("step_00000009\n")
    _flip_byte(root / "step_00000009" / "mp_rank_00_model_states.pt")
    (root / "step_00000006" / "meta.json").write_text("garbage")
    lines = []
    manager = CheckpointManager(tmp_path)
    assert manager.resume_tag(log=lines.append) == "step_00000003"
    assert len(lines) == 3 and "step_00000009 is damaged" in lines[0] and "mp_rank_00_model_states.pt" in lines[0]
    assert "step_00000006 is damaged" in lines[1] and "meta.json" in lines[1]
    assert lines[2].endswith("step_00000003 instead")
    assert sorted(p.name for p in root.iterdir()) == ["damaged-step_00000006", "damaged-step_00000009",
                                                       "step_00000003"]
    assert manager.latest() == "step_00000003"  # the pointer to the damaged one is gone


def test_resume_fails_in_one_line_when_nothing_verifies(tmp_path):
    root = tmp_path / "checkpoints"
    _fake_checkpoint(root, 3, FILES)
    (root / "step_00000003" / "sub" / "extra.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no checkpoint in .* verifies \(1 set aside .*\); the newest: "
                                              r".*extra.bin: 0 bytes"):
        CheckpointManager(tmp_path).resume_tag(log=lambda m: None)


def test_cut_metrics_keeps_steps_up_to_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": s, "split": "train", "loss": s / 10} for s in range(1, 7)] + [{"step": 6, "split": "eval"}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": 7, "spl')  # a write cut short
    assert cut_metrics(path, 3) == 5
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3]
    assert cut_metrics(path, 3) == 0 and cut_metrics(tmp_path / "none.jsonl", 3) == 0


# ---- end to end ----------------------------------------------------------------------------------------------------
def _cli(out: Path, *args) -> list[str]:
    return [sys.executable, "-m", "bertforge.cli", "pretrain", "--synthetic-vocab", "512", "--model", "hidden_size=64",
            "--model", "intermediate_size=128", "--max-seq-length", "32", "--micro-batch", "4", "--global-batch", "8",
            "--dropout", "0", "--log-every", "1", "--eval-every", "0", "--eval-samples", "8", "--no-progress",
            "--no-export-hf", "--save-every", "3", "--output-dir", str(out), *args]


def _train_lines(run: Path) -> list[dict]:
    return [x for x in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if x["split"] == "train"]


def test_cli_resume_skips_a_damaged_checkpoint_then_fails_when_none_is_left(tmp_path):
    run = tmp_path / "run"
    first = subprocess.run(_cli(run, "--steps", "9"), env=worker_env(), cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    reference = {x["step"]: x["loss"] for x in _train_lines(run)}
    bad = run / "checkpoints" / "step_00000009" / "mp_rank_00_model_states.pt"
    _flip_byte(bad)

    resumed = subprocess.run(_cli(run, "--steps", "9", "--resume"), env=worker_env(), cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    damaged = [line for line in resumed.stderr.splitlines() if "is damaged" in line]
    assert len(damaged) == 1 and str(bad) in damaged[0] and "CRC-32" in damaged[0]
    assert "step_00000006 instead" in resumed.stderr and "resumed from" in resumed.stderr
    lines = _train_lines(run)
    assert [x["step"] for x in lines] == list(range(1, 10))  # one line per step: 7-9 were cut, then rewritten
    assert {x["step"]: x["loss"] for x in lines} == reference  # exact: the same state as at step 6

    for tag in ("step_00000006", "step_00000009"):
        (run / "checkpoints" / tag / "meta.json").write_text("{")
    (run / "checkpoints" / "step_00000003" / "trainer_state_rank0.pt").write_bytes(b"")
    failed = subprocess.run(_cli(run, "--steps", "12", "--resume"), env=worker_env(), cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert failed.returncode == 2  # the command line's status for a user error
    errors = [line for line in failed.stderr.splitlines() if line.startswith("bertforge pretrain: error:")]
    assert len(errors) == 1 and "verifies (3 set aside" in errors[0] and "Traceback" not in failed.stderr
    assert "step_00000009/meta.json: unreadable" in errors[0]


def test_two_ranks_find_a_file_only_rank_1_verifies(tmp_path):
    """ZeRO-2 on 2 ranks: the damaged file is in rank 1's share; both ranks fall back to step 6 together and
    repeat steps 7-9 exactly."""
    run_worker("run", tmp_path, 9, ranks=2, ZERO=2, timeout=400)
    reference = [(x["step"], x["loss"]) for x in _train_lines(tmp_path / "run")]
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000009"
    names = sorted(json.loads((ckpt / "meta.json").read_text())["files"])
    target = ckpt / names[1::2][-1]  # the last file of rank 1's share
    target.write_bytes(target.read_bytes()[:-1])
    proc = run_worker("run", tmp_path, 9, ranks=2, ZERO=2, timeout=400)
    assert f"{target}: " in proc.stderr and "step_00000006 instead" in proc.stderr
    assert (ckpt.parent / "damaged-step_00000009").is_dir()
    assert [(x["step"], x["loss"]) for x in _train_lines(tmp_path / "run")] == reference
