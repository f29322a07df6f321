"""--report-to: the records of metrics.jsonl reach TensorBoard, Weights & Biases (offline run files, read back through
wandb's own record format) and MLflow (a local file store, read back through MlflowClient), for one pretraining and
one finetuning run; a tracker that is not installed is one line naming the pip command; a 2-step pretrain and a
finetune emit none of torch's LR-scheduler order warnings."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from bertforge.config.checks import check_report_to
from bertforge.errors import ConfigError
from bertforge.train import trackers
from bertforge.train.metrics import MetricsWriter

HERE = Path(__file__).resolve().parent
ALL = "jsonl,tensorboard,wandb,mlflow"
SCHEDULER_WARNINGS = ("optimizer.step()` has been overridden", "lr_scheduler.step()` before `optimizer.step()")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both runs in a child process (W&B's service and DeepSpeed's group stay out of the test process)."""
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("tracked")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WANDB_", "MLFLOW_")) and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                                     "MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.run([sys.executable, str(HERE / "_tracked_runs.py"), str(root), ALL], cwd=root,
                          env={**env, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _jsonl(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _wandb_records(path: Path):
    """The Record protos of a W&B offline run file: a 7-byte header (':W&B', magic, version), then LevelDB log
    records in 32 KiB blocks (crc32c, length, type; type 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, chunk, block = path.read_bytes(), 7, b"", 32768
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or kind == 0:  # block trailer / padding
            pos += left
            continue
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def _wandb_run(run: Path) -> tuple[list[dict], dict, int]:
    """(history rows, config, exit code) of the one offline W&B run under RUN/wandb."""
    files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    history, config, exit_code = [], {}, None
    for record in _wandb_records(files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({("/".join(i.nested_key) or i.key): json.loads(i.value_json) for i in record.history.item})
        elif kind == "run":
            config = {u.key: json.loads(u.value_json) for u in record.run.config.update}
        elif kind == "exit":
            exit_code = record.exit.exit_code
    return history, config, exit_code


def _mlflow_run(run: Path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 opens a file store only when told
    client = MlflowClient(tracking_uri=(run / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("bertforge")
    found = client.search_runs([experiment.experiment_id])
    assert len(found) == 1
    return client, found[0]


def test_pretraining_records_reach_every_tracker(runs, monkeypatch):
    root, _, _ = runs
    run = root / "pretrain"
    train = [r for r in _jsonl(run) if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    history, config, exit_code = _wandb_run(run)
    assert [(h["_step"], h["train/loss"]) for h in history if "train/loss" in h] == [(r["step"], r["loss"])
                                                                                    for r in train]
    assert any("eval/mlm_acc" in h for h in history)
    assert config["steps"] == 2 and config["report_to"] == ALL.split(",") and exit_code == 0
    client, found = _mlflow_run(run, monkeypatch)
    assert found.info.status == "FINISHED" and found.info.run_name.endswith("/pretrain")
    assert found.data.params["steps"] == "2" and found.data.params["max_seq_length"] == "32"
    losses = client.get_metric_history(found.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in losses] == [(r["step"], r["loss"]) for r in train]
    assert [m.step for m in client.get_metric_history(found.info.run_id, "eval/mlm_acc")] == [2]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_finetuning_records_reach_every_tracker(runs, monkeypatch):
    root, _, _ = runs
    run = root / "classify"
    records = _jsonl(run)
    train = [r for r in records if r["split"] == "train"]
    dev = [r for r in records if r["split"] == "dev" and not r.get("final")]
    assert train and dev and {r["seed"] for r in records} == {1}
    history, config, exit_code = _wandb_run(run)
    assert [(h["seed-1/step"], h["seed-1/train/loss"]) for h in history if "seed-1/train/loss" in h] == \
        [(r["step"], r["loss"]) for r in train]
    assert config["task"] == "classify" and exit_code == 0
    client, found = _mlflow_run(run, monkeypatch)
    assert found.info.status == "FINISHED" and found.data.params["task"] == "classify"
    got = client.get_metric_history(found.info.run_id, "seed-1/dev/accuracy")
    want = [(r["step"], r["accuracy"]) for r in records if r["split"] == "dev"]
    assert sorted((m.step, m.value) for m in got) == sorted(want)
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))  # finetuning writes TensorBoard too


def test_no_scheduler_warning_and_environment_restored(runs):
    _, result, stderr = runs
    assert not [w for w in result["warnings"] if any(s in w for s in SCHEDULER_WARNINGS)], result["warnings"]
    assert not any(s in stderr for s in SCHEDULER_WARNINGS)
    assert result["environment_changed"] == []  # no WANDB_SERVICE or MLFLOW_ALLOW_FILE_STORE left behind


def test_report_to_values():
    assert check_report_to("WandB, mlflow,wandb") == ("wandb", "mlflow")
    assert check_report_to(["none"]) == ("none",) and check_report_to("all") == ("all",)
    with pytest.raises(ConfigError, match=r"unknown tracker 'wandbb' \(did you mean wandb\?\)"):
        check_report_to("jsonl,wandbb")
    with pytest.raises(ConfigError, match="'all' and 'none' stand alone"):
        check_report_to("none,wandb")
    from bertforge.api import _settings

    assert _settings("finetune ner", None, {"report_to": "mlflow"}, "c")[0] == {"report_to": ("mlflow",)}
    assert _settings("pretrain", {"report-to": ["wandb", "jsonl"]}, {}, "c")[0] == {"report_to": ("wandb", "jsonl")}


def test_tracker_not_installed_is_one_line(monkeypatch, caplog):
    monkeypatch.setattr(trackers, "installed", lambda name: name == "mlflow")
    with pytest.raises(ConfigError) as err:
        trackers.select(("jsonl", "wandb"))
    assert str(err.value) == ("--report-to wandb: the wandb package is not installed; pip install "
                              "'bertforge[tracking]' (or pip install wandb), or leave wandb out of --report-to")
    with pytest.raises(ConfigError, match=r"the tensorboard package is not installed; pip install "
                                          r"'bertforge\[tensorboard\]'"):
        trackers.select(("tensorboard",))  # named: required
    assert trackers.select(("jsonl", "tensorboard")) == ()  # the default's: a warning line, the run goes on
    assert "TensorBoard is not installed" in caplog.text
    assert trackers.select(("all",)) == ("mlflow",) and trackers.select(("none",)) == ()


def test_a_failing_tracker_is_dropped_with_one_line(tmp_path, caplog):
    class Broken:
        name = "wandb"
        closed = None

        def log(self, record):
            raise OSError("service gone")

        def close(self, failed):
            Broken.closed = failed

    writer = MetricsWriter(tmp_path, enabled=True, report_to=("jsonl",))
    writer.reporters = [Broken()]
    writer.write({"step": 1, "split": "train", "loss": 1.0})
    writer.write({"step": 2, "split": "train", "loss": 0.5})
    writer.close()
    assert "--report-to wandb failed (OSError: service gone)" in caplog.text and Broken.closed is True
    assert [r["step"] for r in _jsonl(tmp_path)] == [1, 2]


def test_mlflow_resumed_and_failed_runs(tmp_path, monkeypatch, capsys):
    """A resumed run is a new tracker run named after its step; a run closed by an exception is marked FAILED."""
    pytest.importorskip("mlflow")
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(key, raising=False)
    run = tmp_path / "runs" / "bert"
    writer = MetricsWriter(run, enabled=True, report_to=("mlflow",), resume_step=3, params={"lr": 1e-3})
    with pytest.raises(RuntimeError):
        try:
            writer.write({"step": 4, "split": "train", "loss": 2.5})
            raise RuntimeError("a failing step")
        finally:
            writer.close()
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ
    client, found = _mlflow_run(run, monkeypatch)
    assert found.info.run_name == "runs/bert (resumed at step 3)" and found.info.status == "FAILED"
    assert found.data.tags["bertforge.resumed_at_step"] == "3" and found.data.params["lr"] == "0.001"
    assert [(m.step, m.value) for m in client.get_metric_history(found.info.run_id, "train/loss")] == [(4, 2.5)]


def test_report_to_in_a_config_file(tmp_path, capsys):
    from bertforge.cli import main

    path = tmp_path / "run.yaml"
    path.write_text("report_to: [WandB, mlflow]\n")
    assert main(["pretrain", "--config", str(path), "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["report_to"] == ["wandb", "mlflow"]
    assert main(["pretrain", "--config", str(path), "--report-to", "none", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["report_to"] == ["none"]
