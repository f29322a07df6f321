"""What a run reports: one JSONL line per logging step (run_dir/metrics.jsonl, eval lines carry "split": "eval"; a
resumed run first cuts the lines after its checkpoint, so each step appears once), the same records to each
--report-to tracker (TensorBoard, Weights & Biases, MLflow: engine/train/trackers.py), on rank 0. MFU = achieved
model FLOP/s over the accelerator's peak, reported on GPUs whose peak we know."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import torch

from bertforge.config import ModelConfig
from bertforge.config.checks import DEFAULT_REPORT_TO
from bertforge.errors import DataError
from bertforge.io import write_text
from bertforge.log import get_logger
from bertforge.train.trackers import failing, open_reporters, select

logger = get_logger(__name__)

# Dense (no sparsity) bf16/fp16 tensor-core peak FLOP/s, by the exact name torch.cuda.get_device_name() reports
# (vendor data sheets). A name not listed gets no MFU unless --peak-flops gives the peak.
PEAK_FLOPS = {
    "NVIDIA H100 80GB HBM3": 989e12,  # H100 SXM5
    "NVIDIA H100 PCIe": 756e12,
    "NVIDIA H100 NVL": 835e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A100-SXM4-40GB": 312e12,
    "NVIDIA A100 80GB PCIe": 312e12, "NVIDIA A100-PCIE-40GB": 312e12,
    "NVIDIA A10": 125e12,
    "NVIDIA L40S": 362e12, "NVIDIA L40": 181e12,
    "Tesla V100-SXM2-16GB": 125e12, "Tesla V100-SXM2-32GB": 125e12, "Tesla V100-PCIE-16GB": 112e12,
    "Tesla V100-PCIE-32GB": 112e12,
    "NVIDIA GeForce RTX 4090": 165e12,
}


def flops_per_token(model: ModelConfig, seq_len: int, mlm_fraction: float = 0.15) -> float:
    """Training FLOPs per token (forward + backward = 3x forward): 6 x matmul parameters of the encoder,
    attention scores/values 12 x L x h x S, and the MLM decoder on the masked fraction only."""
    h, i, L = model.hidden_size, model.intermediate_size, model.num_hidden_layers
    encoder = L * (4 * h * h + 2 * h * i)
    decoder = mlm_fraction * (h * h + h * model.vocab_size)
    return 6 * (encoder + decoder) + 12 * L * h * seq_len


def peak_flops(override: float = 0.0, device_name: str | None = None) -> float | None:
    """Peak FLOP/s of one accelerator for MFU: `override` (--peak-flops) when > 0, else PEAK_FLOPS[exact device
    name], else None (no MFU reported: a close name such as an H100 PCIe must not get the SXM peak)."""
    if override > 0:
        return float(override)
    if device_name is None:
        if not torch.cuda.is_available():
            return None
        device_name = torch.cuda.get_device_name()
    return PEAK_FLOPS.get(device_name.strip())


def cut_metrics(path: str | Path, last_step: int) -> int:
    """Rewrite a metrics.jsonl (atomically) keeping only the lines of steps <= last_step, so that a run resumed from
    step `last_step` appends each later step once. Lines that do not parse (a write cut short by a crash) are dropped.
    Returns the number of lines removed; a missing file is left missing."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, removed = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            keep = int(record["step"]) <= last_step
        except (ValueError, KeyError, TypeError):
            keep = False
        if keep:
            kept.append(line)
        else:
            removed += bool(line.strip())
    if removed:
        write_text(path, "".join(x + "\n" for x in kept))
    return removed


class MetricsWriter:
    """Rank 0 writes RUN/metrics.jsonl and forwards each record to the --report-to trackers (engine/train/trackers.py);
    other ranks hold a writer that does nothing. `report_to`: the config's report_to (every rank checks it, so a
    tracker that is not installed stops all of them with the same line); `params`: the run's settings, the trackers'
    config / params; `resume_step`: a resumed run's starting step, lines after it (written before the interruption)
    are cut first (`cut_metrics`)."""

    def __init__(self, run_dir: str | Path, enabled: bool, report_to: Sequence[str] = DEFAULT_REPORT_TO,
                 resume_step: int | None = None, params: dict | None = None):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.reporters: list = []
        names = select(report_to, warn=enabled)
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            cut_metrics(self.path, resume_step)
        self.file = open(self.path, "a", encoding="utf-8")
        try:
            self.reporters = open_reporters(names, run_dir, params, resume_step)
        except BaseException:
            self.file.close()
            raise

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        record = {k: v for k, v in record.items() if v is not None}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        for reporter in list(self.reporters):
            try:
                reporter.log(record)
            except Exception as exc:  # noqa: BLE001 - a tracker's failure must not end the run
                logger.warning("bertforge: --report-to %s failed (%s: %s); it gets no further records "
                               "(metrics.jsonl has them all)", reporter.name, type(exc).__name__, exc)
                self.reporters.remove(reporter)
                try:
                    reporter.close(failed=True)
                except Exception:  # noqa: BLE001 - already reported
                    pass

    def close(self) -> None:
        """Close metrics.jsonl and each tracker (its run marked failed when an exception is in flight)."""
        if self.enabled:
            self.file.close()
            failed = failing()
            for reporter in self.reporters:
                reporter.close(failed)
            self.reporters = []


def read_metrics(run_dir: str | Path, notes: list[str] | None = None) -> list[dict]:
    """The records of RUN_DIR/metrics.jsonl. A last line without its newline that is not valid JSON (a run killed
    while writing it) is left out, with a note appended to `notes`; any other bad line is a DataError naming
    file:line."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise DataError("no metrics (is this an output directory of `bertforge pretrain` or `bertforge finetune`?)",
                        str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 at byte {exc.start}", str(path)) from None
    lines = text.split("\n")
    out = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if lineno == len(lines):  # no newline after it: cut short by a killed run
                if notes is not None:
                    notes.append(f"{path}:{lineno}: the last line is cut short (a killed run?); left out")
                break
            raise DataError(f"not valid JSON ({exc.msg})", str(path), lineno) from None
        if not isinstance(record, dict):
            raise DataError("expected a JSON object per line", str(path), lineno)
        out.append(record)
    return out


class Throughput:
    """Tokens and samples per second over the last logging window."""

    def __init__(self):
        self.t0, self.tokens, self.samples = time.perf_counter(), 0, 0

    def add(self, tokens: int, samples: int) -> None:
        self.tokens += tokens
        self.samples += samples

    def rates(self) -> tuple[float, float]:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        out = (self.tokens / dt, self.samples / dt)
        self.t0, self.tokens, self.samples = time.perf_counter(), 0, 0
        return out
