"""benchmarks/train_throughput.py runs end to end on CPU with the tiny shape (HF baseline, ours and every ablation),
writes its JSON and table; the Wikipedia length histogram loads and the batches it drives have those lengths."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import train_throughput as tt  # noqa: E402


def test_train_throughput_tiny_cpu_with_every_ablation(tmp_path):
    out = tmp_path / "tt.json"
    lengths = tmp_path / "lengths.npy"
    np.save(lengths, np.array([20, 33, 47, 64, 64]))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--shapes", "tiny-64",
                           "--variants", "ablation", "--steps", "2", "--warmup", "1", "--batch", "4",
                           "--vocab", "2048", "--lengths", str(lengths), "--max-batch", "--max-batch-limit", "16", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    # fp32 on CPU: every ablation but ours-bf16-weights (bf16 only)
    assert {r["variant"] for r in result["rows"]} == {"hf", "ours", *tt.ABLATIONS} - {"ours-bf16-weights"}
    for row in result["rows"]:
        assert "error" not in row, row
        assert row["seq_per_s"] > 0 and 0 < row["mfu"] < 1.5
        assert 4 * 20 <= row["real_tokens_per_step"] <= 4 * 64
        assert len(row["losses"]) == 3 and row["loss_ok"], row  # warm-up + 2 timed steps; checked against pure torch
        if row["variant"].startswith("ours") and row["variant"] != "ours-device-mask":
            assert row["loss_check"] == "ok" and abs(row["loss_init"] - row["ref_loss_init"]) < 2e-3 * row["loss_init"]
    assert result["all_ok"]
    assert result["max_batch"]["tiny-64"] == {"hf": 16, "ours": 16}  # CPU: doubles up to the limit
    assert "tiny-64" in proc.stdout and "x hf" in proc.stdout and "largest batch" in proc.stdout


def test_bf16_weights_row_trains_and_needs_bf16(tmp_path):
    """ours-bf16-weights (bf16 weights, fp32 masters, as DeepSpeed's bf16) starts at the pure-torch autocast loss
    within the bf16 tolerance and trains; asked for in fp32 it is an error row and the run exits 1."""
    out = tmp_path / "tt.json"
    base = [sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--shapes", "tiny-64", "--steps", "2",
            "--warmup", "1", "--batch", "4", "--vocab", "2048", "--threads", "1", "--out", str(out)]
    proc = subprocess.run(base + ["--precision", "bf16", "--variants", "ours,ours-bf16-weights"], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["ours-bf16-weights"]["loss_check"] == "ok" and rows["ours-bf16-weights"]["loss_ok"]
    proc = subprocess.run(base + ["--precision", "fp32", "--variants", "ours-bf16-weights"], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 1
    assert "needs --precision bf16" in json.loads(out.read_text())["rows"][0]["error"]


def test_isolated_rows_take_their_mfu_against_one_peak(tmp_path):
    """--isolate: each child process measures its own matmul rate; the rows' MFU must use the run's one rate (the
    JSON's matmul_flops), so MFU ranks the rows as tokens/s does."""
    out = tmp_path / "tt.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--shapes", "tiny-64",
                           "--variants", "ours,ours-torch-mlm-loss", "--isolate", "--steps", "1", "--warmup", "1",
                           "--batch", "4", "--vocab", "2048", "--threads", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    cfg = tt.preset("tiny", vocab_size=2048)
    flops_tok = tt.train_flops_per_token(cfg.num_hidden_layers, cfg.hidden_size, 64, cfg.vocab_size)
    assert len(result["rows"]) == 2
    for row in result["rows"]:
        assert "error" not in row, row
        assert abs(row["mfu"] - row["real_tok_per_s"] * flops_tok / result["matmul_flops"]) < 1e-9 * row["mfu"] + 1e-12


def test_wiki_histogram_and_batches():
    for seq in (128, 512):
        pool = tt.lengths_pool("wiki", seq)
        assert len(pool) > 10_000 and pool.min() >= 4 and pool.max() <= seq
    gen = torch.Generator().manual_seed(0)
    b = tt.make_batch(64, 128, 1000, tt.lengths_pool("wiki", 128), gen)
    assert torch.equal(b["real"].sum(1), b["lengths"])
    chosen = b["labels"] != -100
    assert not (chosen & b["special"]).any() and (b["special"] | b["real"]).all()
    share = chosen.sum() / (~b["special"]).sum()
    assert 0.10 < float(share) < 0.20
    hf = tt.step_inputs("hf", b, torch.device("cpu"))
    assert hf["input_ids"].shape[1] % 8 == 0 and hf["input_ids"].shape[1] >= int(b["lengths"].max())
    ours = tt.step_inputs("ours", b, torch.device("cpu"))
    assert ours["input_ids"].numel() == int(b["lengths"].sum())
    assert torch.equal(ours["mlm_labels"], b["labels"][chosen])


def test_loader_masking_benchmark_runs(prepared, tokenizer_dir, tmp_path):
    import loader_masking

    res = loader_masking.main([str(prepared[0]), str(tokenizer_dir), "--max-seq-length", "64", "--batch", "8",
                               "--seconds", "0.2", "--out", str(tmp_path / "lm.json")])
    assert [(r["pack"], r["masking"]) for r in res["rows"]] == [(False, "host"), (False, "device"),
                                                                (True, "host"), (True, "device")]
    assert all(r["samples_per_s"] > 0 for r in res["rows"])
    assert json.loads((tmp_path / "lm.json").read_text()) == res


def test_a_variant_that_trains_something_else_fails_its_row(tmp_path, monkeypatch, capsys):
    """A path whose loss is off (here: 3% too high, as a wrong kernel would give) is flagged, not timed as a win."""
    build = tt.build

    def broken(variant, cfg, device):
        model, forward, optimizer = build(variant, cfg, device)
        if variant == "ours-padded":
            return model, lambda inputs: forward(inputs) * 1.03, optimizer
        return model, forward, optimizer

    monkeypatch.setattr(tt, "build", broken)
    res = tt.main(["--shapes", "tiny-64", "--variants", "ours,ours-padded", "--steps", "2", "--warmup", "1",
                   "--batch", "4", "--vocab", "512", "--out", str(tmp_path / "tt.json")])
    rows = {r["variant"]: r for r in res["rows"]}
    assert rows["ours"]["loss_check"] == "ok"
    assert rows["ours-padded"]["loss_check"].startswith("loss_init") and not rows["ours-padded"]["loss_ok"]
    assert not res["all_ok"] and "FAIL loss_init" in capsys.readouterr().out


@pytest.mark.parametrize("flag,value,word", [("--shapes", "tiny-6", "shape"), ("--variants", "hf,ourz", "variant")])
def test_unknown_shape_or_variant_is_one_line(flag, value, word, capsys):
    with pytest.raises(SystemExit) as exc:
        tt.main([flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"unknown {word}(s)" in err and value.split(",")[-1] in err


def test_table_columns_line_up_for_every_variant():
    """Each row's columns start where the header's do, whatever the variant's name length."""
    head = tt.TABLE_HEAD
    row = {"shape": "tiny-64", "lengths": "full", "batch": 8, "seq_per_s": 1.0, "real_tok_per_s": 64.0, "mfu": 0.5,
           "peak_gib": None, "loss_init": 11.0, "loss_last": 10.9}
    for variant in tt.VARIANTS:
        line = tt.table_row({**row, "variant": variant})
        assert line.index(" 8 ") + 2 == head.index("batch") + len("batch"), variant
