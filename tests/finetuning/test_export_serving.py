"""A finetuned export serves as it trained: its tokenizer files carry the trained length, so transformers'
pipeline(truncation=True) and `bertforge predict` agree on texts longer than it; every export has a model card and
config.json records torch_dtype and transformers_version."""
import json

import pytest

from bertforge.cli import main
from tests.finetuning._data import sentiment_csv


def test_pipeline_and_predict_agree_past_the_trained_length(tiny_ckpt, tmp_path):
    transformers = pytest.importorskip("transformers")
    train, dev = sentiment_csv(tmp_path / "train.csv", 40, 0), sentiment_csv(tmp_path / "dev.csv", 16, 1)
    assert main(["finetune", "classify", "--model", str(tiny_ckpt), "--train", str(train), "--dev", str(dev),
                 "--epochs", "1", "--global-batch", "8", "--max-seq-length", "12", "--threads", "1",
                 "--no-progress", "--pooling", "cls", "--out", str(tmp_path / "out")]) == 0  # [CLS]: what a
    model = tmp_path / "out" / "seed-1"  # transformers pipeline computes (mean pooling: tests/finetuning/test_pooling.py)
    assert list((tmp_path / "out" / "tensorboard").glob("events.out.tfevents.*"))  # finetuning writes TensorBoard
    from bertforge.training.plot import plot_run

    assert plot_run(tmp_path / "out").stat().st_size > 0  # a finetune run's curves (tests/training/test_plot.py)
    assert json.loads((model / "tokenizer_config.json").read_text())["model_max_length"] == 12
    if (model / "tokenizer.json").is_file():
        assert json.loads((model / "tokenizer.json").read_text())["truncation"]["max_length"] == 12
    config = json.loads((model / "config.json").read_text())
    assert config["torch_dtype"] == "float32" and config["transformers_version"] == transformers.__version__
    card = (model / "README.md").read_text()
    assert "| task | classify |" in card and "dev accuracy" in card and "pipeline(" in card
    texts = [" ".join(["the movie was good and the food was great today"] * 3), "bad film " * 9 + "awful"]
    (tmp_path / "long.csv").write_text("text\n" + "\n".join(texts) + "\n")
    assert main(["predict", str(model), str(tmp_path / "long.csv"), "--out", str(tmp_path / "p.jsonl")]) == 0
    ours = [json.loads(line)["probabilities"] for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    pipe = transformers.pipeline("text-classification", model=str(model), device="cpu", top_k=None)
    assert len(pipe.tokenizer(texts[0])["input_ids"]) > 12  # longer than the trained length
    for mine, theirs in zip(ours, pipe(texts, truncation=True)):
        for d in theirs:
            assert d["score"] == pytest.approx(mine[d["label"]], abs=1e-6)
