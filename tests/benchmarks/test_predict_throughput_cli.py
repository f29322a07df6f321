"""benchmarks/predict_throughput.py end to end on a tiny model: the plain Hugging Face loop and `bertforge predict`'s
core over the same texts, a same-round ratio for each, JSON and tables out; its synthetic texts and tokenizer."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_predict_throughput_tiny_cpu(tmp_path):
    out = tmp_path / "pred.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "predict_throughput.py"), "--shape", "tiny",
                           "--length", "32", "--batch", "8", "--texts", "12", "--passes", "1", "--threads", "1",
                           "--variants", "hf,ours", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [r["variant"] for r in result["rows"]] == ["hf", "ours"] and 8 <= result["tokens_per_text"] <= 32
    for row in result["rows"]:
        assert "error" not in row, row
        assert row["outputs"] == 12 and row["texts_per_s"] > 0 and row["cpu_pass_s"] > 0 and row["load_avg"] >= 0
    assert result["rows"][0]["speedup_vs_hf"] == 1.0 and result["rows"][1]["speedup_vs_hf"] > 0
    assert [s["variant"] for s in result["summary"]] == ["hf", "ours"] and "x hf cpu" in proc.stdout


def test_texts_and_words():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import predict_throughput as pt

    words = pt.make_words(500)
    assert len(set(words)) == 500 and all(w.isalpha() and 2 <= len(w) <= 10 for w in words)
    texts = pt.make_texts(100, 60, words)
    counts = [len(t.split()) for t in texts]
    assert min(counts) >= 10 and max(counts) <= 40 and len(set(counts)) > 10
    assert texts == pt.make_texts(100, 60, words) != pt.make_texts(100, 60, words, seed=5)
