"""benchmarks/finetune_throughput.py runs its tiny CPU row end to end: the Hugging Face Trainer and our finetuning step
(the DeepSpeed engine of `bertforge finetune`) on the same synthetic examples, JSON and table out."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_finetune_throughput_tiny_cpu(tmp_path):
    out = tmp_path / "ft.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "finetune_throughput.py"), "--shapes", "tiny-64",
                           "--batch", "4", "--steps", "2", "--warmup", "1", "--vocab", "1024", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["precision"] == "fp32" and [r["variant"] for r in result["rows"]] == ["hf", "ours"]
    for row in result["rows"]:
        assert "error" not in row, row
        assert row["examples_per_s"] > 0 and row["peak_mib"] > 0 and row["steps_timed"] == 2
        assert row["cpu_step_s"] > 0 and row["load_avg"] >= 0 and row["round"] == 0
        assert 16 * 4 <= row["real_tokens_per_s"] * row["step_s"] <= 64 * 4  # lengths in [S/4, S]
    assert result["rows"][0]["speedup_vs_hf"] == 1.0 and result["rows"][1]["speedup_vs_hf"] > 0
    assert "tiny-64" in proc.stdout and "x hf" in proc.stdout
    assert [(s["variant"], s["rounds"]) for s in result["summary"]] == [("hf", 1), ("ours", 1)]
    assert result["summary"][1]["cpu_speedup_vs_hf"] == result["rows"][1]["cpu_speedup_vs_hf"] > 0


def test_ablations_switch_back_one_piece_each(monkeypatch):
    """Each ablation variant undoes exactly its piece (monkeypatch restores them after the test)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import finetune_throughput as ft
    from bertforge import deepspeed as ds
    from bertforge.kernels import reference
    from bertforge.train import trainer  # the runtime builds the optimizer

    for module, name in ((reference, "VARLEN_PER_SEQUENCE_ON_CPU"), (ds, "apply_foreach_clipping"),
                         (trainer, "build_optimizer")):
        monkeypatch.setattr(module, name, getattr(module, name))
    assert ft._ablate("ours") == {} and ft._ablate("ours-padded") == {"unpadded": False}
    assert reference.VARLEN_PER_SEQUENCE_ON_CPU and ft._ablate("ours-repad") == {}
    assert not reference.VARLEN_PER_SEQUENCE_ON_CPU
    ft._ablate("ours-ds-clip")
    assert ds.apply_foreach_clipping(object()) is False
    ft._ablate("ours-foreach")
    import torch

    opt = trainer.build_optimizer("adamw", [{"params": [torch.nn.Parameter(torch.zeros(2))]}], 1e-3, fused=None)
    assert not opt.defaults["fused"] and opt.defaults["foreach"] is True


def test_examples_lengths_and_labels():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import finetune_throughput as ft

    feats = ft.examples(200, 64, 1000, seed=3)
    lengths = [len(f["input_ids"]) for f in feats]
    assert min(lengths) >= 16 and max(lengths) <= 64 and len(set(lengths)) > 20
    assert all(f["input_ids"][0] == 2 and f["input_ids"][-1] == 3 for f in feats)
    assert {f["labels"] for f in feats} == {0, 1} and feats == ft.examples(200, 64, 1000, seed=3)
