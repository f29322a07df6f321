"""The one prepared run for a lent GPU machine (see shared/GPU.md): correctness first, then speed, within a time
budget the script enforces itself, writing at most 3 files under --out (default $OUT):
  gpu_check_table.txt   the summary table (also printed at the end)
  gpu_check.json        per step: status, seconds, limit, the last lines of its output
  gpu_check_logs.tar.gz every step's log and JSON (<= 16 MB; the largest files are dropped first if it is bigger)

Each step runs in its own process (one illegal-address fault ends only that CUDA context) with limit = min(its cap,
what is left of the budget); a step whose expected time no longer fits is skipped and says so, and optional steps
run only when their expected time fits. Expected seconds (H100/H200, first run, compile caches cold) and caps:

  step               expected  cap   what
  versions                5    20    torch / triton / device
  attention              90   150    bf16 correctness (all layouts, dropout, every autotune config and autotune's
                                     pick at B256/S128 and B64/S512) + attention vs SDPA, with/without padding, p=0.1
  bias_gelu              20    60    bf16 correctness + bench, one process per kernel family from here ...
  layer_norm             20    60
  mlm_loss               25    60
  masking                15    60
  lamb                   15    60    ... to here
  model_switch           30    90    the model with kernels on equals kernels off (tests/engine)
  e2e_base128            110  170    BERT-base s128 B256, real Wikipedia lengths: hf, hf-compile, ours, ours-no-kernels
                                     (losses checked against the pure-torch path)
  finetune               80   140    `bertforge finetune classify --kernels triton` in bf16 and fp16, then the step
                                     vs the HF Trainer (base-128, batch 32, bf16; skipped without carried model + data)
  e2e_large128 (opt.)    50    90    BERT-large s128 B128: hf, ours
  ablations (opt.)       90   150    base-128: ours-padded, -dense-mlm, -unfused-adamw, -device-mask, -lamb, -compile
  loop (opt.)            75   120    `bertforge pretrain` (DeepSpeed from carried wheels, real corpus): tok/s,
                                     data_wait_frac, profiled device idle share
Expected total: ~405 s of the default 450 s budget (the device call's 8 minutes minus start-up margin); with
everything optional ~600 s, so the optional steps run in order as long as they fit.

Usage on the GPU machine:   python3 benchmarks/gpu_check.py --out "$OUT" [--budget 450]
CPU dry run (CI):           python benchmarks/gpu_check.py --dry-run --out DIR   (tiny shapes, Triton interpreter)
Carried along (scripts/gpu_carry.sh): .whl (DeepSpeed wheels, for `loop` and `finetune`), runs/quickstart/{data,tok}
(for `loop`), runs/gpu_carry/{minilm,classify.csv} (for `finetune`: MiniLM's config and vocabulary, not its weights,
which pass the 64 MiB carry limit, hence --from-scratch)."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ARCHIVE_MAX = 16 * 2**20


@dataclass
class Step:
    name: str
    expected_s: float  # on an H100/H200, first run
    cap_s: float  # never more than this, even with budget left
    argv: list  # command (strings); {out} is the step's folder
    optional: bool = False  # only when its expected time still fits
    env: dict = field(default_factory=dict)
    needs: object = None  # callable -> None, or the reason to skip


def _tt(shapes, batch, variants, lengths="full", steps=10, warmup=3):
    return [PY, "benchmarks/train_throughput.py", "--shapes", shapes, "--batch", str(batch), "--variants", variants,
            "--lengths", lengths, "--steps", str(steps), "--warmup", str(warmup), "--out", "{out}/tt.json"]


def _finetune_needs(dry: bool):
    def check():
        if not (ROOT / "runs/gpu_carry/minilm").is_dir():
            return "skipped: runs/gpu_carry/minilm and classify.csv not carried (scripts/gpu_carry.sh)"
        return None
    return check


def _loop_needs():
    if not (ROOT / "runs/quickstart/data").is_dir():
        return "skipped: runs/quickstart/data not carried (scripts/gpu_carry.sh)"
    return None


def steps(dry: bool) -> list[Step]:
    """The plan; dry: the same steps on tiny shapes (CPU, interpreter)."""
    interp = {"TRITON_INTERPRET": "1"} if dry else {}
    base, large, b_base, b_large = ("tiny-64", "tiny-64", 4, 4) if dry else ("base-128", "large-128", 256, 128)
    lengths = "full" if dry else "wiki"
    quick = dict(steps=2, warmup=1) if dry else {}
    plan = [
        Step("versions", 5, 20, [PY, "-c", "import torch, triton; print('torch', torch.__version__, 'triton', "
                                 "triton.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() "
                                 "else 'cpu')"]),
        Step("attention", 90, 150 if not dry else 400, [PY, "benchmarks/gpu_check_attention.py", "--out", "{out}"],
             env=interp),
    ]
    for family, exp in (("bias_gelu", 20), ("layer_norm", 20), ("mlm_loss", 25), ("masking", 15), ("lamb", 15)):
        plan.append(Step(family, exp, 60 if not dry else 300,
                         [PY, "benchmarks/gpu_check_kernels.py", "--out", "{out}", "--only", family], env=interp))
    plan += [
        Step("model_switch", 30, 90 if not dry else 300,
             [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/engine/test_model_kernels_switch.py"],
             env=interp, needs=_pytest_needs),
        Step("e2e_base128", 110, 170 if not dry else 400,
             _tt(base, b_base, "hf,hf-compile,ours,ours-no-kernels" if not dry else "hf,ours,ours-no-kernels",
                 lengths, **quick)),
        Step("finetune", 80, 140 if not dry else 300, [PY, "benchmarks/gpu_check.py", "--finetune-step", "{out}"],
             needs=_finetune_needs(dry)),
        Step("e2e_large128", 50, 90 if not dry else 300, _tt(large, b_large, "hf,ours", **quick), optional=True),
        Step("ablations", 90, 150 if not dry else 400,
             _tt(base, b_base, "ours-padded,ours-dense-mlm,ours-unfused-adamw,ours-device-mask,ours-lamb"
                 + ("" if dry else ",ours-compile"), lengths, **quick), optional=True),
        Step("loop", 75, 120 if not dry else 300,
             [PY, "benchmarks/gpu_check.py", "--loop-step", "{out}"] + (["--dry-run"] if dry else []), optional=True,
             needs=_loop_needs),
    ]
    return plan


def _pytest_needs():
    if subprocess.run([PY, "-c", "import pytest"], capture_output=True).returncode != 0:
        return "skipped: no pytest on this machine"
    return None


def _with_deepspeed(env: dict) -> dict | None:
    """env with DeepSpeed importable: as installed, or from the carried wheels in .whl/ (into /tmp/site); None if
    neither."""
    if subprocess.run([PY, "-c", "import deepspeed"], env=env, capture_output=True).returncode == 0:
        return env
    wheels = sorted(str(w) for w in (ROOT / ".whl").glob("*.whl"))
    if not wheels:
        return None
    subprocess.run([PY, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
                    "--upgrade", "--target", "/tmp/site", *wheels], check=True)
    return dict(env, PYTHONPATH="/tmp/site" + os.pathsep + env["PYTHONPATH"])


def _build_extension(env: dict) -> None:
    """The pybind11 helpers (numpy only) for this Python, in place, when the present build does not import."""
    if subprocess.run([PY, "-c", "import bertforge._csrc"], cwd=ROOT, env=env, capture_output=True).returncode != 0:
        subprocess.run([PY, "setup.py", "-q", "build_ext", "--inplace"], cwd=ROOT, env=env, check=True)


def finetune_commands(out: Path) -> list[list[str]]:
    """The finetune step's command lines: `bertforge finetune classify` from MiniLM's config (random weights: the
    carry limit leaves its weights behind) on the carried 2,000 tweets, one epoch in bf16 with the Triton kernels and
    one in fp16 (dynamic loss scaling), then the step against the HF Trainer (BERT-base s128, batch 32, bf16)."""
    common = [PY, "-m", "bertforge.cli", "finetune", "classify", "--model", "runs/gpu_carry/minilm", "--data",
              "runs/gpu_carry/classify.csv", "--split", "0.6,0.2,0.2", "--epochs", "1", "--global-batch", "32",
              "--max-seq-length", "128", "--from-scratch", "--kernels", "triton", "--no-progress"]
    return [common + ["--precision", "bf16", "--out", str(out / "run-bf16")],
            common + ["--precision", "fp16", "--out", str(out / "run-fp16")],
            [PY, "benchmarks/finetune_throughput.py", "--shapes", "base-128", "--batch", "32", "--precision", "bf16",
             "--out", str(out / "finetune_throughput.json")]]


def finetune_step(out: Path) -> int:
    """Runs `finetune_commands` in order; the first failure's exit status (later commands still run)."""
    env = _with_deepspeed(_env({}))
    if env is None:
        print("finetune: no deepspeed and no .whl/ carried (scripts/gpu_carry.sh)")
        return 3
    rc = 0
    for cmd in finetune_commands(out):
        print("finetune:", " ".join(cmd[1:]), flush=True)
        r = subprocess.run(cmd, cwd=ROOT, env=env).returncode
        rc = rc or r
    return rc


def _env(extra: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TRITON_DEFAULT_FP_FUSION="1")
    env.update(extra)
    return env


def run_step(step: Step, work: Path, left: float) -> dict:
    """Runs one step in its own process with limit = min(cap, left); -> its record."""
    out = work / step.name
    out.mkdir(parents=True, exist_ok=True)
    reason = step.needs() if step.needs else None
    if reason:
        return dict(step=step.name, status=reason, seconds=0.0, limit=0.0)
    limit = min(step.cap_s, left)
    if limit < min(step.expected_s, step.cap_s) * (1.0 if step.optional else 0.5):
        return dict(step=step.name, status=f"skipped: {left:.0f} s left, expected {step.expected_s:.0f} s",
                    seconds=0.0, limit=0.0)
    argv = [a.replace("{out}", str(out)) for a in step.argv]
    t0 = time.monotonic()
    log = out / "log.txt"
    with open(log, "w") as f:
        try:
            rc = subprocess.run(argv, cwd=ROOT, env=_env(step.env), stdout=f, stderr=subprocess.STDOUT,
                                timeout=limit).returncode
            status = "ok" if rc == 0 else f"FAIL (exit {rc})"
        except subprocess.TimeoutExpired:
            status = f"TIMEOUT after {limit:.0f} s"
    tail = log.read_text(errors="replace").splitlines()[-25:]
    return dict(step=step.name, status=status, seconds=round(time.monotonic() - t0, 1), limit=round(limit),
                expected=step.expected_s, tail=tail)


def table(records: list[dict], budget: float, total: float) -> str:
    lines = [f"{'step':<14} {'status':<58} {'s':>6} {'limit':>6} {'expected':>8}"]
    for r in records:
        lines.append(f"{r['step']:<14} {r['status'][:58]:<58} {r['seconds']:>6.0f} {r['limit']:>6.0f} "
                     f"{r.get('expected', 0):>8.0f}")
    lines.append(f"total {total:.0f} s of a {budget:.0f} s budget")
    for r in records:  # the results each step printed last (its own table)
        if r.get("tail") and r["step"] != "versions":
            lines += ["", f"== {r['step']} (last lines)"] + [ln[:160] for ln in r["tail"][-14:]]
    return "\n".join(lines)


def pack(work: Path, archive: Path) -> list[str]:
    """tar.gz of everything under work, dropping the largest files until it is <= 16 MB; -> dropped paths."""
    files = sorted((p for p in work.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    dropped = []
    while True:
        with tarfile.open(archive, "w:gz") as tar:
            for p in files:
                tar.add(p, arcname=str(p.relative_to(work)))
        if archive.stat().st_size <= ARCHIVE_MAX or not files:
            return dropped
        dropped.append(str(files.pop().relative_to(work)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results/gpu"))
    p.add_argument("--budget", type=float, default=450.0, help="seconds for all steps (packing excluded)")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU under the Triton interpreter")
    p.add_argument("--only", action="append", help="run only these steps (repeatable)")
    p.add_argument("--loop-step", metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument("--finetune-step", metavar="DIR", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.loop_step:
        return loop_step(Path(args.loop_step), args.dry_run)
    if args.finetune_step:
        return finetune_step(Path(args.finetune_step))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    t0 = time.monotonic()
    records = []
    for step in steps(args.dry_run):
        if args.only and step.name not in args.only:
            continue
        left = args.budget - (time.monotonic() - t0)
        rec = run_step(step, work, left)
        records.append(rec)
        print(f"{rec['step']:<14} {rec['status']:<40} {rec['seconds']:>6.0f} s", flush=True)
    total = time.monotonic() - t0
    text = table(records, args.budget, total)
    (out / "gpu_check_table.txt").write_text(text + "\n")
    dropped = pack(work, out / "gpu_check_logs.tar.gz")
    summary = dict(budget_s=args.budget, total_s=round(total, 1), dry_run=args.dry_run, steps=records,
                   dropped_from_archive=dropped,
                   all_ok=all(r["status"] == "ok" or r["status"].startswith("skipped") for r in records))
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=1))
    shutil.rmtree(work)
    print(text)
    return 0 if summary["all_ok"] else 1


def loop_step(out: Path, dry: bool = False) -> int:
    """`bertforge pretrain` on the carried corpus (BERT-base, bf16, unpadded, kernels, device masking, prefetch):
    the last logged window's tok/s and data_wait_frac, and the profiled device idle share. dry: the same command
    line on CPU with the tiny preset, a few steps and the pure-torch ops (the flags are what it checks)."""
    env = _with_deepspeed(_env({}))
    if env is None:
        print("loop: no deepspeed and no .whl/ carried (scripts/gpu_carry.sh)")
        return 3
    _build_extension(env)  # the sample map is C++
    run = out / "run"
    cmd = [PY, "-m", "bertforge.cli", "pretrain", "--data", "runs/quickstart/data", "--tokenizer", "runs/quickstart/tok",
           "--output-dir", str(run), "--preset", "bert-base", "--max-seq-length", "128", "--micro-batch", "256",
           "--global-batch", "256", "--steps", "60", "--lr", "1e-4", "--warmup-steps", "10", "--precision", "bf16",
           "--kernels", "triton", "--unpadded", "--masking", "device", "--prefetch", "2", "--eval-every", "0",
           "--eval-batches", "2", "--save-every", "0", "--log-every", "20", "--no-progress", "--no-export-hf",
           "--profile-steps", "10"]
    if dry:
        for flag, value in (("--preset", "tiny"), ("--micro-batch", "8"), ("--global-batch", "8"), ("--steps", "4"),
                            ("--kernels", "none"), ("--log-every", "2"), ("--profile-steps", "1")):
            cmd[cmd.index(flag) + 1] = value
    rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    if rc:
        return rc
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    r = rows[-1]  # the last window: warm-up (autotune, allocator) falls in the first
    print(f"step {r['step']}: {r['samples_per_s']:.0f} seq/s, {r['tokens_per_s']:.0f} tok/s, data_wait_frac "
          f"{r['data_wait_frac']:.4f}, loss {r['loss']:.3f}")
    prof = json.loads((run / "profile.json").read_text())
    print(f"profiled {prof['steps']} steps: {prof['step_s'] * 1e3:.1f} ms/step, device idle "
          f"{prof['device_idle_frac']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
