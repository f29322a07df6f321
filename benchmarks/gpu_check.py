"""The one prepared run for a lent GPU machine (see shared/GPU.md): correctness first, then speed, within a time
budget the script enforces itself, writing exactly 3 files under --out (default $OUT), the first two rewritten after
every step (a call cut short still brings back what ran):
  gpu_check.json        per step: status, seconds, limit, expected, the last lines of its output
  gpu_check_table.txt   the summary table (also printed at the end)
  gpu_check_logs.tar.gz the steps' small files (logs, JSON, profile tables; each <= 2 MB, picked by size BEFORE
                        compressing, gzip level 1; <= 16 MB), written last
Everything else (the installed package, run folders, checkpoints) lives in a scratch folder outside --out
($TMPDIR/bertforge-gpu-check): nothing large is ever packed or sent back.

Each step runs in its own process group (one illegal-address fault ends only that CUDA context; on its time limit
the whole group is killed, grandchildren included) with limit = min(its cap, what is left of the budget); its output
is streamed line by line to its log and to stdout as it comes, and the check scripts print and append each row as it
finishes. A step whose expected time no longer fits is skipped and says so; optional steps run only when their
expected time fits. Every step after `preflight` is skipped, with the reason, when preflight failed.
Expected seconds (H100/H200, first run, compile caches cold) and caps:

  step            expected  cap   what
  preflight           45   150    versions and clocks; the carried wheels (.whl/) installed once and bertforge
                                  built (its C++ extension with this machine's setuptools + pybind11) into the
                                  scratch site; `import bertforge.heads, bertforge._csrc, deepspeed`
  e2e_base128        100   170    BERT-base s128 B256, Wikipedia lengths: ours (+ one profiled step: the
                                  top-kernels table), HF (SDPA, eager mode: not compiled), ours without the
                                  kernels (losses checked against the pure-torch path)
  bias_gelu           15    60    bf16 correctness + bench, one process per kernel family from here ...
  layer_norm          15    60
  mlm_loss            20    60
  masking             10    60
  lamb                10    60    ... to here
  attention           60   120    d = 64 (BERT's head size) only: correctness of every layout, dropout, every
                                  autotune config and autotune's pick at B256/S128 and B64/S512 + the benchmark
  loop                60   110    `bertforge pretrain` (DeepSpeed from the carried wheels, real corpus, no final
                                  checkpoint): tok/s, data_wait_frac, profiled device idle share
  model_switch        30    90    the model with kernels on equals kernels off (tests/engine)
  finetune            35    90    one `bertforge finetune classify --kernels triton --precision fp16` epoch
  hf_compile (opt.)   60   100    HF under torch.compile, same shape (~30-55 s of inductor compile)
  finetune_more (o.)  50    90    the same epoch in bf16 + the finetune step vs the HF Trainer
  e2e_large128 (o.)   50    90    BERT-large s128 B128: hf, ours
  ablations (opt.)    90   150    base-128: ours, then the structural pieces off (-unfused-qkv, -full-last-layer,
                                  -all-queries, -dropout24: RESULTS.md's predictions), -padded, -dense-mlm,
                                  -unfused-adamw, -device-mask, -lamb, -compile; each row saved as it finishes
Expected total of the required steps: 400 s of the default 480 s budget (one optional step fits); packing < 5 s.
The device call needs timeout_s = 600 (budget + the last step's kill + packing + interpreter start).

Usage on the GPU machine:   python3 benchmarks/gpu_check.py --out "$OUT"      (README, "GPU": carry and timeout)
CPU rehearsal (CI):         bash scripts/gpu_rehearsal.sh  (the same command with --dry-run on a copy of what the
                            call carries, in the device's package set; tiny shapes, Triton interpreter)
Carried along (scripts/gpu_carry.sh): .whl (DeepSpeed wheels, for `loop` and `finetune`), runs/quickstart/{data,tok}
(for `loop`), runs/gpu_carry/{minilm,classify.csv} (for `finetune`: MiniLM's config and vocabulary, not its weights,
which pass the 64 MiB carry limit, hence --from-scratch; a stratified sample of 2,000 labelled tweets)."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ARCHIVE_MAX = 16 * 2**20  # the device tool brings back files of at most 16 MiB
PACK_FILE_MAX = 2 * 2**20  # bigger files are never packed (a checkpoint, a trace)
PACK_SUFFIXES = (".txt", ".json", ".jsonl", ".log", ".csv", ".md")
KILL_GRACE_S = 3.0  # SIGTERM to a step's process group, then SIGKILL after this


def scratch_dir() -> Path:
    """Where steps work and bertforge is installed: outside --out, so nothing large is ever sent back."""
    return Path(os.environ.get("BERTFORGE_GPU_SCRATCH") or Path(tempfile.gettempdir()) / "bertforge-gpu-check")


def site_dir() -> Path:
    return scratch_dir() / "site"


def preflight_state() -> dict | None:
    """preflight.json of this run's preflight step, or None when it did not finish."""
    path = site_dir() / "preflight.json"
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass
class Step:
    name: str
    expected_s: float  # on an H100/H200, first run
    cap_s: float  # never more than this, even with budget left
    argv: list  # command (strings); {out} is the step's folder
    optional: bool = False  # only when its expected time still fits
    env: dict = field(default_factory=dict)
    needs: object = None  # callable -> None, or the reason to skip


def _tt(shapes, batch, variants, lengths="full", steps=10, warmup=3, profile=False):
    return [PY, "benchmarks/train_throughput.py", "--shapes", shapes, "--batch", str(batch), "--variants", variants,
            "--lengths", lengths, "--steps", str(steps), "--warmup", str(warmup), "--out", "{out}/tt.json"] + \
        (["--profile", "ours", "--profile-out", "{out}/profile_ours.txt"] if profile else [])


def _needs_preflight():
    state = preflight_state()
    if state is None or not state.get("ok"):
        return "skipped: preflight failed (see its log)"
    return None


def _needs_deepspeed(*paths: str):
    def check():
        reason = _needs_preflight()
        if reason:
            return reason
        if not preflight_state().get("deepspeed"):
            return "skipped: no deepspeed (no .whl/ carried: scripts/gpu_carry.sh)"
        missing = [p for p in paths if not (ROOT / p).exists()]
        return f"skipped: {', '.join(missing)} not carried (scripts/gpu_carry.sh)" if missing else None
    return check


def _needs_pytest():
    reason = _needs_preflight()
    if reason:
        return reason
    if subprocess.run([PY, "-c", "import pytest"], capture_output=True).returncode != 0:
        return "skipped: no pytest on this machine"
    return None


def steps(dry: bool) -> list[Step]:
    """The plan, in the order that answers the key questions first; dry: the same steps on tiny shapes (CPU,
    interpreter), each with a cap that CPU needs."""
    interp = {"TRITON_INTERPRET": "1"} if dry else {}
    base, large, b_base, b_large = ("tiny-64", "tiny-64", 4, 4) if dry else ("base-128", "large-128", 256, 128)
    lengths = "full" if dry else "wiki"
    quick = dict(steps=2, warmup=1) if dry else {}
    cap = (lambda gpu, cpu: cpu) if dry else (lambda gpu, cpu: gpu)
    pre = _needs_preflight
    carry_ft = ("runs/gpu_carry/minilm", "runs/gpu_carry/classify.csv")
    plan = [
        Step("preflight", 45, cap(150, 400), [PY, "benchmarks/gpu_check.py", "--preflight-step", "{out}"]),
        Step("e2e_base128", 100, cap(170, 300), _tt(base, b_base, "ours,hf,ours-no-kernels", lengths, profile=True,
                                                    **quick), needs=pre),
    ]
    for family, exp in (("bias_gelu", 15), ("layer_norm", 15), ("mlm_loss", 20), ("masking", 10), ("lamb", 10)):
        plan.append(Step(family, exp, cap(60, 300),
                         [PY, "benchmarks/gpu_check_kernels.py", "--out", "{out}", "--only", family], env=interp,
                         needs=pre))
    plan += [
        Step("attention", 60, cap(120, 400), [PY, "benchmarks/gpu_check_attention.py", "--out", "{out}"], env=interp,
             needs=pre),
        Step("loop", 60, cap(110, 300), [PY, "benchmarks/gpu_check.py", "--loop-step", "{out}"]
             + (["--dry-run"] if dry else []), needs=_needs_deepspeed("runs/quickstart/data", "runs/quickstart/tok")),
        Step("model_switch", 30, cap(90, 300),
             [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/engine/test_model_kernels_switch.py"],
             env=interp, needs=_needs_pytest),
        Step("finetune", 35, cap(90, 300), [PY, "benchmarks/gpu_check.py", "--finetune-step", "{out}", "fp16"]
             + (["--dry-run"] if dry else []), needs=_needs_deepspeed(*carry_ft)),
        # dry: with TORCHDYNAMO_DISABLE (inductor's CPU compile takes minutes on 2 cores, and the device compiles for
        # CUDA, which no CPU rehearses): the step's command line and plumbing are what the dry run checks
        Step("hf_compile", 60, cap(100, 300), _tt(base, b_base, "hf-compile", lengths, **quick), optional=True,
             env={"TORCHDYNAMO_DISABLE": "1"} if dry else {}, needs=pre),
        Step("finetune_more", 50, cap(90, 300), [PY, "benchmarks/gpu_check.py", "--finetune-step", "{out}", "more"]
             + (["--dry-run"] if dry else []), optional=True, needs=_needs_deepspeed(*carry_ft)),
        Step("e2e_large128", 50, cap(90, 300), _tt(large, b_large, "hf,ours", **quick), optional=True, needs=pre),
        Step("ablations", 90, cap(150, 400),
             _tt(base, b_base, "ours,ours-unfused-qkv,ours-full-last-layer,ours-all-queries,ours-dropout24,"
                 "ours-padded,ours-dense-mlm,ours-unfused-adamw,ours-device-mask,ours-lamb"
                 + ("" if dry else ",ours-compile"), lengths, **quick), optional=True, needs=pre),
    ]
    return plan


# ---- preflight ---------------------------------------------------------------------------------------------------
_IMPORTS = "import bertforge._csrc, bertforge.heads, bertforge.model, bertforge.cli, bertforge.kernels.attention"


def _show(cmd: list[str], timeout: float | None = 30, **kw) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    try:
        return subprocess.run(cmd, timeout=timeout, **kw).returncode
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"  -> {type(exc).__name__}: {exc}", flush=True)
        return 127


def preflight_step(out: Path) -> int:
    """Versions and clocks; the carried wheels installed once into the scratch site; bertforge built and installed
    there (`pip install --no-deps --no-build-isolation --no-index --target`: the C++ extension compiled with this
    machine's setuptools + pybind11); the imports the later steps need. Writes site/preflight.json (ok, deepspeed)."""
    site = site_dir()
    state = dict(ok=False, deepspeed=False)
    print(f"python {sys.version.split()[0]} at {PY}", flush=True)
    _show([PY, "-c", "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, "
                     "torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"], timeout=60)
    _show(["nvidia-smi", "--query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu",
           "--format=csv"])
    wheels = sorted(str(w) for w in (ROOT / ".whl").glob("*.whl"))
    pip = [PY, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir", "--upgrade",
           "--target", str(site)]
    if wheels and _show(pip + wheels, timeout=None) != 0:  # bounded by the step's own limit
        print("preflight: the carried wheels did not install (see above)", flush=True)
        return 1
    if _show(pip + ["--no-build-isolation", str(ROOT)], timeout=None) != 0:
        print("preflight: bertforge did not build (see above)", flush=True)
        return 1
    env = _env({})
    if _show([PY, "-c", _IMPORTS + "; print('bertforge imports: ok')"], timeout=120, env=env, cwd=ROOT) != 0:
        return 1
    state["ok"] = True
    state["deepspeed"] = _show([PY, "-c", "import deepspeed; print('deepspeed', deepspeed.__version__)"], timeout=120,
                               env=env, cwd=ROOT) == 0
    (site / "preflight.json").write_text(json.dumps(state))
    return 0


# ---- finetune and loop -------------------------------------------------------------------------------------------
def finetune_commands(out: Path, which: str = "fp16") -> list[list[str]]:
    """The finetune steps' command lines: `bertforge finetune classify` from MiniLM's config (random weights: the
    carry limit leaves its weights behind) on the carried 2,000 tweets, one epoch with the Triton kernels: fp16
    (dynamic loss scaling; which='fp16'), or bf16 and then the step against the HF Trainer (BERT-base s128, batch 32,
    bf16; which='more')."""
    common = [PY, "-m", "bertforge.cli", "finetune", "classify", "--model", "runs/gpu_carry/minilm", "--data",
              "runs/gpu_carry/classify.csv", "--split", "0.6,0.2,0.2", "--epochs", "1", "--global-batch", "32",
              "--max-seq-length", "128", "--from-scratch", "--kernels", "triton", "--no-progress"]
    if which == "fp16":
        return [common + ["--precision", "fp16", "--out", str(out / "run-fp16")]]
    return [common + ["--precision", "bf16", "--out", str(out / "run-bf16")],
            [PY, "benchmarks/finetune_throughput.py", "--shapes", "base-128", "--batch", "32", "--precision", "bf16",
             "--out", str(out / "finetune_throughput.json")]]


def finetune_step(out: Path, which: str, dry: bool = False) -> int:
    """Runs `finetune_commands` in order; the first failure's exit status (later commands still run). dry (CPU): the
    same command lines with --precision bf16 for fp16 (CPU has no fp16 training), --kernels none (the CLI refuses
    triton on CPU outside the interpreter), --max-seq-length 64 and without the HF Trainer comparison (minutes on
    CPU)."""
    rc = 0
    cmds = finetune_commands(out, which)
    if dry:
        cpu = {("--precision", "fp16"): "bf16", ("--kernels", "triton"): "none", ("--max-seq-length", "128"): "64"}
        cmds = [[cpu.get((c[i - 1], a), a) for i, a in enumerate(c)] for c in cmds[:1]]
    for cmd in cmds:
        print("finetune:", " ".join(cmd[1:]), flush=True)
        r = subprocess.run(cmd, cwd=ROOT, env=_env({})).returncode
        rc = rc or r
    return rc


def _env(extra: dict) -> dict:
    """The steps' environment: bertforge (and the carried wheels) from the scratch site, then the repository (for
    benchmarks/ and tests/)."""
    path = [str(site_dir()), str(ROOT), os.environ.get("PYTHONPATH")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, path)), PYTHONUNBUFFERED="1",
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TRITON_DEFAULT_FP_FUSION="1", BERTFORGE_GPU_SCRATCH=str(scratch_dir()))
    env.update(extra)
    return env


# ---- running steps -----------------------------------------------------------------------------------------------
def kill_group(pgid: int) -> None:
    """SIGTERM to the process group, SIGKILL to what is left after KILL_GRACE_S (a step's grandchildren included:
    `bertforge finetune` under a wrapper, data-loader workers)."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def run_step(step: Step, work: Path, left: float, echo=sys.stdout) -> dict:
    """Runs one step in its own process group with limit = min(cap, left), its output streamed to work/NAME/log.txt
    and to `echo` line by line; the group is killed when the step ends or times out. -> its record."""
    out = work / step.name
    out.mkdir(parents=True, exist_ok=True)
    reason = step.needs() if step.needs else None
    if reason:
        return dict(step=step.name, status=reason, seconds=0.0, limit=0.0, expected=step.expected_s)
    limit = min(step.cap_s, left)
    if limit < min(step.expected_s, step.cap_s) * (1.0 if step.optional else 0.5):
        return dict(step=step.name, status=f"skipped: {left:.0f} s left, expected {step.expected_s:.0f} s",
                    seconds=0.0, limit=0.0, expected=step.expected_s)
    argv = [a.replace("{out}", str(out)) for a in step.argv]
    t0 = time.monotonic()
    log = out / "log.txt"
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.Popen(argv, cwd=ROOT, env=_env(step.env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, text=True, errors="replace")

        def pump():
            for line in proc.stdout:
                f.write(line)
                f.flush()
                if echo is not None:
                    echo.write(f"[{step.name}] {line}")
                    echo.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout=limit)
            status = "ok" if rc == 0 else f"FAIL (exit {rc})"
        except subprocess.TimeoutExpired:
            status = f"TIMEOUT after {limit:.0f} s"
        finally:
            kill_group(proc.pid)  # what the step left running, or the whole step on a timeout
            proc.wait()
            reader.join(timeout=5)
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
        if r.get("tail") and r["step"] != "preflight":
            lines += ["", f"== {r['step']} (last lines)"] + [ln[:160] for ln in r["tail"][-14:]]
    return "\n".join(lines)


def pack(work: Path, archive: Path) -> list[str]:
    """tar.gz (level 1) of the small files under work: suffix in PACK_SUFFIXES and <= PACK_FILE_MAX bytes, chosen
    BEFORE compressing; the largest are dropped until the archive is <= ARCHIVE_MAX. -> paths left out and why."""
    files, left_out = [], []
    for p in sorted(x for x in work.rglob("*") if x.is_file()):
        size = p.stat().st_size
        if p.suffix not in PACK_SUFFIXES or size > PACK_FILE_MAX:
            left_out.append(f"{p.relative_to(work)} ({size} bytes)")
        else:
            files.append(p)
    files.sort(key=lambda p: p.stat().st_size)
    while True:
        tmp = archive.with_name(archive.name + ".tmp")
        with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:
            for p in files:
                tar.add(p, arcname=str(p.relative_to(work)))
        tmp.replace(archive)
        if archive.stat().st_size <= ARCHIVE_MAX or not files:
            return left_out
        left_out.append(f"{files.pop().relative_to(work)} (archive over 16 MB)")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _summary(args, records, total, left_out=None) -> dict:
    return dict(budget_s=args.budget, total_s=round(total, 1), dry_run=args.dry_run, steps=records,
                left_out_of_archive=left_out, packed=left_out is not None,
                all_ok=all(r["status"] == "ok" or r["status"].startswith("skipped") for r in records))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results/gpu"))
    p.add_argument("--budget", type=float, default=480.0, help="seconds for all steps (packing excluded)")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU under the Triton interpreter")
    p.add_argument("--only", action="append", help="run only these steps (repeatable; preflight always runs)")
    p.add_argument("--loop-step", metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument("--finetune-step", nargs=2, metavar=("DIR", "WHICH"), help=argparse.SUPPRESS)
    p.add_argument("--preflight-step", metavar="DIR", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.dry_run and args.budget == 480.0:
        args.budget = 1500.0  # CPU: the interpreter is slow; the caps still bound each step
    if args.preflight_step:
        return preflight_step(Path(args.preflight_step))
    if args.loop_step:
        return loop_step(Path(args.loop_step), args.dry_run)
    if args.finetune_step:
        return finetune_step(Path(args.finetune_step[0]), args.finetune_step[1], args.dry_run)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scratch = scratch_dir()
    os.environ["BERTFORGE_GPU_SCRATCH"] = str(scratch)
    if scratch.exists():
        import shutil

        shutil.rmtree(scratch)
    work = scratch / "work"
    work.mkdir(parents=True)
    t0 = time.monotonic()
    records = []
    for step in steps(args.dry_run):
        if args.only and step.name not in args.only and step.name != "preflight":
            continue
        left = args.budget - (time.monotonic() - t0)
        rec = run_step(step, work, left)
        records.append(rec)
        print(f"== {rec['step']:<14} {rec['status']:<40} {rec['seconds']:>6.0f} s", flush=True)
        total = time.monotonic() - t0  # the summary first, after every step: a cut-short call still brings it back
        _write(out / "gpu_check.json", json.dumps(_summary(args, records, total), indent=1))
        _write(out / "gpu_check_table.txt", table(records, args.budget, total) + "\n")
    total = time.monotonic() - t0
    text = table(records, args.budget, total)
    left_out = pack(work, out / "gpu_check_logs.tar.gz")
    summary = _summary(args, records, total, left_out)
    _write(out / "gpu_check.json", json.dumps(summary, indent=1))
    print(text)
    return 0 if summary["all_ok"] else 1


def loop_step(out: Path, dry: bool = False) -> int:
    """`bertforge pretrain` on the carried corpus (BERT-base, bf16, unpadded, kernels, device masking, prefetch, no
    final checkpoint): the last logged window's tok/s and data_wait_frac, and the profiled device idle share. dry:
    the same command line on CPU with the tiny preset, a few steps and the pure-torch ops (the flags are what it
    checks)."""
    run = out / "run"
    cmd = [PY, "-m", "bertforge.cli", "pretrain", "--data", "runs/quickstart/data", "--tokenizer", "runs/quickstart/tok",
           "--output-dir", str(run), "--preset", "bert-base", "--max-seq-length", "128", "--micro-batch", "256",
           "--global-batch", "256", "--steps", "60", "--lr", "1e-4", "--warmup-steps", "10", "--precision", "bf16",
           "--kernels", "triton", "--unpadded", "--masking", "device", "--prefetch", "2", "--eval-every", "0",
           "--eval-samples", "512", "--save-every", "0", "--no-final-checkpoint", "--log-every", "20", "--no-progress",
           "--no-export-hf", "--profile-steps", "10"]
    if dry:
        for flag, value in (("--preset", "tiny"), ("--micro-batch", "8"), ("--global-batch", "8"), ("--steps", "4"),
                            ("--kernels", "none"), ("--log-every", "2"), ("--profile-steps", "1"),
                            ("--eval-samples", "16")):
            cmd[cmd.index(flag) + 1] = value
    rc = subprocess.run(cmd, cwd=ROOT, env=_env({})).returncode
    if rc:
        return rc
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    r = rows[-1]  # the last window: warm-up (autotune, allocator) falls in the first
    print(f"step {r['step']}: {r['samples_per_s']:.0f} seq/s, {r['tokens_per_s']:.0f} tok/s, data_wait_frac "
          f"{r['data_wait_frac']:.4f}, loss {r['loss']:.3f}")
    prof = json.loads((run / "profile.json").read_text())
    print(f"profiled {prof['steps']} steps: {prof['step_s'] * 1e3:.1f} ms/step, device idle "
          f"{prof['device_idle_frac']}")
    ckpts = run / "checkpoints"
    if ckpts.is_dir() and any(ckpts.iterdir()):
        print(f"loop: {ckpts} holds a checkpoint; the step must save none (--no-final-checkpoint)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
