"""Shared by the GPU check scripts (gpu_check_attention.py, gpu_check_kernels.py): `RowLog` prints each check's row
and appends it to NAME_rows.jsonl as soon as the check finishes (a step killed on its time limit keeps every row it
finished); `report` writes NAME_check.json and NAME_bench.json under the output folder and prints the benchmark
table."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch


def _line(c: dict, width: int) -> str:
    detail = c.get("error") or (f"kernel {c['err_kernel']:.3g} vs torch {c['err_torch']:.3g}" if "err_kernel" in c
                                else f"value {c['value']:.4g}")
    return f"{'OK  ' if c['ok'] else 'FAIL'} {c['check']:<{width}} {detail}"


class RowLog:
    """Rows printed (flushed) and appended to out_dir/NAME_rows.jsonl as they come; .rows holds them all."""

    def __init__(self, name: str, out_dir: Path, width: int):
        self.path, self.width, self.rows = Path(out_dir) / f"{name}_rows.jsonl", width, []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")

    def add(self, rows: list[dict]) -> None:
        with open(self.path, "a") as f:
            for c in rows:
                f.write(json.dumps(c) + "\n")
                print(_line(c, self.width), flush=True)
        self.rows += rows


def report(name: str, out_dir: Path, checks: list[dict], bench: dict, table: str, t0: float, t_check: float,
           width: int) -> dict:
    """checks: dicts with check, ok and err_kernel/err_torch, value or error (already printed by a RowLog); bench: {"rows": [...]}; table: the
    formatted bench rows; t0 / t_check: start time and seconds spent on the checks. Returns the check summary."""
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (TRITON_INTERPRET smoke run)"
    result = dict(device=device, checks=checks, all_ok=all(c["ok"] for c in checks), check_s=round(t_check, 1),
                  total_s=round(time.time() - t0, 1))
    (out_dir / f"{name}_check.json").write_text(json.dumps(result, indent=1))
    (out_dir / f"{name}_bench.json").write_text(json.dumps(bench, indent=1))
    print(table)
    print(f"{name}: all_ok={result['all_ok']} checks {result['check_s']} s, total {result['total_s']} s")
    return result
