"""The ending shared by the GPU check scripts (gpu_check_attention.py, gpu_check_kernels.py): write NAME_check.json
and NAME_bench.json under the output folder, print one line per check and the benchmark table."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch


def report(name: str, out_dir: Path, checks: list[dict], bench: dict, table: str, t0: float, t_check: float,
           width: int) -> dict:
    """checks: dicts with check, ok and err_kernel/err_torch, value or error; bench: {"rows": [...]}; table: the
    formatted bench rows; t0 / t_check: start time and seconds spent on the checks. Returns the check summary."""
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (TRITON_INTERPRET smoke run)"
    result = dict(device=device, checks=checks, all_ok=all(c["ok"] for c in checks), check_s=round(t_check, 1),
                  total_s=round(time.time() - t0, 1))
    (out_dir / f"{name}_check.json").write_text(json.dumps(result, indent=1))
    (out_dir / f"{name}_bench.json").write_text(json.dumps(bench, indent=1))
    for c in checks:
        detail = c.get("error") or (f"kernel {c['err_kernel']:.3g} vs torch {c['err_torch']:.3g}" if "err_kernel" in c
                                    else f"value {c['value']:.4g}")
        print(f"{'OK  ' if c['ok'] else 'FAIL'} {c['check']:<{width}} {detail}")
    print(table)
    print(f"{name}: all_ok={result['all_ok']} checks {result['check_s']} s, total {result['total_s']} s")
    return result
