"""Finetuning on 2 gloo ranks (DeepSpeed on CPU) against 1 rank with the same global batch, at dropout 0 and 0.1 (masks
keyed per example): classification and NER give the same loss sequence (fp32 <= 1e-5) and identical dev / test
metrics under ZeRO 0, 2 and 3; a run stopped by SIGTERM and resumed continues with exactly the losses of the
uninterrupted run; dataset and dev-set sizes that do not divide by the ranks finish without a hang (101 training
examples, micro batch 4; 13 dev examples in evaluation batches of 5); bf16 on CPU runs end to end, and 2 bf16 ranks
stay within twice the difference that another micro-batch split makes on 1 rank."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.finetuning._data import ner_conll, sentiment_csv

WORKER = Path(__file__).with_name("_worker.py")
REPO = Path(__file__).resolve().parents[2]
FP32_ATOL = 1e-5
BF16 = ("--precision", "bf16", "--epochs", "2", "--evals-per-epoch", "2")  # 26 steps
DROPOUT = ("--dropout", "0.1", "--epochs", "2")  # every mask keyed per example: the ranks still agree


def launch(spec: list[dict], path: Path, ranks: int, timeout: float = 900) -> list[int]:
    """Run the worker on `ranks` processes; returns rank 0's exit status of each run."""
    import os

    path.write_text(json.dumps(spec))
    env = dict(os.environ, DS_ACCELERATOR="cpu", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = ([sys.executable, str(WORKER), str(path)] if ranks == 1 else
           [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", str(WORKER),
            str(path)])
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"worker on {ranks} rank(s) exited {proc.returncode}:\n{proc.stderr[-5000:]}")
    return json.loads(Path(f"{path}.rank0.codes.json").read_text())


def argv(task: str, model: Path, data: dict, out: Path, *extra) -> list[str]:
    longer = ["--epochs", "8", "--lr", "5e-3"] if task == "classify" else []  # long enough to learn something
    return ["finetune", task, "--model", str(model), "--train", str(data["train"]), "--dev", str(data["dev"]),
            "--test", str(data["test"]), "--out", str(out), "--dropout", "0", "--global-batch", "8", "--micro-batch",
            "4", "--epochs", "2", "--lr", "3e-3", "--log-every", "1", "--eval-micro-batch", "5", "--no-progress",
            "--threads", "1", "--max-seq-length", "32", "--recipe", "lecture", *longer, *map(str, extra)]


def losses(run: Path) -> list[float]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [x["loss"] for x in lines if x.get("split") == "train"]


def final(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())["runs"][0]


@pytest.fixture(scope="module")
def runs(tiny_ckpt, tmp_path_factory):
    root = tmp_path_factory.mktemp("multirank")
    cls = {k: sentiment_csv(root / f"{k}.csv", n, i) for i, (k, n) in enumerate([("train", 101), ("dev", 13),
                                                                                  ("test", 11)])}
    ner = {k: ner_conll(root / f"{k}.conll", n, i) for i, (k, n) in enumerate([("train", 29), ("dev", 13),
                                                                               ("test", 7)])}
    one = [{"argv": argv("classify", tiny_ckpt, cls, root / "cls_1")},
           {"argv": argv("ner", tiny_ckpt, ner, root / "ner_1")},
           {"argv": argv("classify", tiny_ckpt, cls, root / "bf16_1_m4", *BF16)},
           {"argv": argv("classify", tiny_ckpt, cls, root / "bf16_1_m8", *BF16, "--micro-batch", 8)},
           {"argv": argv("classify", tiny_ckpt, cls, root / "cls_1_d01", *DROPOUT)},
           {"argv": argv("ner", tiny_ckpt, ner, root / "ner_1_d01", *DROPOUT)}]
    two = [{"argv": argv("classify", tiny_ckpt, cls, root / "cls_2_z2", "--zero-stage", 2)},
           {"argv": argv("classify", tiny_ckpt, cls, root / "cls_2_z3", "--zero-stage", 3)},
           {"argv": argv("ner", tiny_ckpt, ner, root / "ner_2_z0")},
           {"argv": argv("classify", tiny_ckpt, cls, root / "cls_2_resumed", "--zero-stage", 3), "sigterm_at": 3},
           {"argv": argv("classify", tiny_ckpt, cls, root / "cls_2_resumed", "--zero-stage", 3, "--resume")},
           {"argv": argv("classify", tiny_ckpt, cls, root / "bf16_2_m4", *BF16)},
           {"argv": argv("classify", tiny_ckpt, cls, root / "cls_2_d01", *DROPOUT)},
           {"argv": argv("ner", tiny_ckpt, ner, root / "ner_2_d01", *DROPOUT)}]
    codes_one = launch(one, root / "one.json", 1)
    codes_two = launch(two, root / "two.json", 2)
    return root, codes_one, codes_two


@pytest.mark.parametrize("name", ["cls_2_z2", "cls_2_z3"])
def test_classify_two_ranks_equal_one_rank(runs, name):
    root, _, codes = runs
    assert codes[:2] == [0, 0]
    ref, got = losses(root / "cls_1"), losses(root / name)
    assert len(ref) == len(got) == 101  # ceil(8 epochs x 101 / 8): the odd size wraps into the next epoch, no hang
    assert max(abs(a - b) for a, b in zip(ref, got)) <= FP32_ATOL, (ref, got)
    for split in ("dev", "test"):
        a, b = final(root / "cls_1")[split], final(root / name)[split]
        assert (a["accuracy"], a["macro_f1"], a["confusion"]) == (b["accuracy"], b["macro_f1"], b["confusion"])
        assert a["confusion"]["matrix"] and sum(map(sum, a["confusion"]["matrix"])) == (13 if split == "dev" else 11)
    from safetensors.torch import load_file

    ref_w, got_w = (load_file(str(root / run / "seed-1" / "model.safetensors")) for run in ("cls_1", name))
    assert set(ref_w) == set(got_w)  # the exported best state, consolidated from the ZeRO shards
    # summation order of the gradient all-reduce, amplified by Adam's 1/sqrt(v) over 101 steps: measured 1.3e-4
    assert max((ref_w[k] - got_w[k]).abs().max().item() for k in ref_w) < 1e-3
    history = [h["accuracy"] for h in final(root / name)["dev_history"]]
    assert history == [h["accuracy"] for h in final(root / "cls_1")["dev_history"]] and len(history) == 8  # every 13 steps, and the last
    assert max(history) > 0.8  # it learned: the equal metrics are not those of a constant guess


def test_ner_two_ranks_equal_one_rank(runs):
    root, codes_one, codes = runs
    assert codes_one[1] == 0 and codes[2] == 0
    ref, got = losses(root / "ner_1"), losses(root / "ner_2_z0")
    assert len(ref) == len(got) == 8
    assert max(abs(a - b) for a, b in zip(ref, got)) <= FP32_ATOL, (ref, got)
    for split in ("dev", "test"):
        a, b = final(root / "ner_1")[split], final(root / "ner_2_z0")[split]
        assert {k: a[k] for k in ("precision", "recall", "f1", "n_gold", "n_pred")} == \
            {k: b[k] for k in ("precision", "recall", "f1", "n_gold", "n_pred")}


@pytest.mark.parametrize("task", ["cls", "ner"])
def test_two_ranks_equal_one_rank_with_dropout(runs, task):
    """At dropout 0.1 every mask (embeddings, attention, epilogues, the head) is keyed by the example's (seed, epoch,
    index), so 2 ranks x micro batch 4 draw the masks of 1 rank x 2 micro batches of 4: the same losses as at
    dropout 0, and not those of the dropout-0 run (the masks are on)."""
    root, codes_one, codes = runs
    i = {"cls": 0, "ner": 1}[task]
    assert codes_one[4 + i] == 0 and codes[6 + i] == 0
    ref, got = losses(root / f"{task}_1_d01"), losses(root / f"{task}_2_d01")
    assert len(ref) == len(got) == (26 if task == "cls" else 8)
    assert max(abs(a - b) for a, b in zip(ref, got)) <= FP32_ATOL, (ref, got)
    plain = losses(root / f"{task}_1")  # the first step's loss comes before any update: only the masks differ
    assert abs(ref[0] - plain[0]) > 100 * FP32_ATOL


def test_sigterm_saves_and_resume_continues_identically(runs):
    root, _, codes = runs
    assert codes[3:5] == [143, 0]  # stopped by SIGTERM with a checkpoint, then resumed to the end
    run = root / "cls_2_resumed"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [x["step"] for x in lines if x.get("split") == "train"]
    assert steps == list(range(1, 102))  # 1-4 before the SIGTERM (sent during step 4), 5-101 after the resume
    assert losses(run) == losses(root / "cls_2_z3")  # exact: same weights, optimizer, schedule and data position
    assert final(run)["test"]["accuracy"] == final(root / "cls_2_z3")["test"]["accuracy"]
    assert not (run / "state").exists() or not any((run / "state").iterdir())  # finished: the state is removed


def test_bf16_runs_and_two_ranks_stay_within_the_micro_batch_noise(runs):
    root, codes_one, codes = runs
    assert codes_one[2:4] == [0, 0] and codes[5] == 0
    m4, m8, two = losses(root / "bf16_1_m4"), losses(root / "bf16_1_m8"), losses(root / "bf16_2_m4")
    assert len(m4) == len(m8) == len(two) == 26 and all(torch.isfinite(torch.tensor(two)))
    split_noise = max(abs(a - b) for a, b in zip(m4, m8))
    assert 0 < split_noise < 0.05
    assert max(abs(a - b) for a, b in zip(m4, two)) <= 2 * split_noise, (m4, m8, two)
    fp32 = losses(root / "cls_1")  # its first 26 steps run at the 8-epoch schedule's higher lr: loosely similar
    assert max(abs(a - b) for a, b in zip(fp32, m4)) < 0.2
    assert (root / "bf16_2_m4" / "seed-1" / "model.safetensors").is_file()
