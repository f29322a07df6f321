"""The pretraining loop end to end: with --global-batch fixed, the MLM loss curve does not depend on --micro-batch
(fp32, dropout 0, NSP pairs of the Wikipedia slice, unpadded, 60% of them at a random shorter target length, so micro batches hold
different numbers of masked tokens): micro batch 8 (no accumulation) vs 2 (4 micro batches a step) give the same
per-step losses and MLM losses. Synthetic batches cannot show it (they are drawn per micro batch). Runs in a child
process through the Python API (bertforge.pretrain), one call per split."""
import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import json, sys
    import bertforge
    root, data, tok = sys.argv[1:4]
    common = {"data": data, "tokenizer": tok, "preset": "tiny", "max_seq_length": 64, "short_seq_prob": 0.6, "unpadded": True, "global_batch": 8, "steps": 4,
              "model": {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, "num_hidden_layers": 1},
              "dropout": 0.0, "lr": 1e-3, "warmup_steps": 0, "log_every": 1, "eval_samples": 13, "progress": False,
              "export_hf": False, "seed": 7}
    for micro in (8, 2):
        bertforge.pretrain(common, micro_batch=micro, output_dir=f"{root}/m{micro}")
''')


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _train_lines(path):
    return [r for r in _lines(path) if r.get("split") == "train"]


def test_micro_batch_changes_neither_the_losses_nor_the_held_out_scores(tmp_path, prepared, tokenizer_dir):
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(prepared[0]), str(tokenizer_dir)], capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    full, accumulated = (_train_lines(tmp_path / f"m{m}" / "metrics.jsonl") for m in (8, 2))
    assert [r["step"] for r in full] == [r["step"] for r in accumulated] == [1, 2, 3, 4]
    for a, b in zip(full, accumulated):
        assert abs(a["mlm_loss"] - b["mlm_loss"]) < 2e-5, (a, b)
        assert abs(a["loss"] - b["loss"]) < 2e-5, (a, b)
    # --eval-samples 13: one batch of 8 and a short one of 5, or 7 batches of 2 (the last short): the same samples
    evals = [[r for r in _lines(tmp_path / f"m{m}" / "metrics.jsonl") if r.get("split") == "eval"] for m in (8, 2)]
    assert len(evals[0]) == len(evals[1]) == 1 and evals[0][0]["masked_tokens"] == evals[1][0]["masked_tokens"] > 0
    for key in ("loss", "mlm_acc", "nsp_acc", "mlm_unigram_acc"):
        assert abs(evals[0][0][key] - evals[1][0][key]) < 2e-5, (key, evals)
