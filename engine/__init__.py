"""bertforge: pretraining and finetuning engine for BERT-style bidirectional encoders.

`import bertforge` is light (no torch): the Python API (bertforge/api.py) loads on first use.

    import bertforge
    run = bertforge.pretrain(data="runs/data", tokenizer="runs/tok", steps=200, output_dir="runs/nb")
    summary = bertforge.finetune("classify", model=run.output_dir, data="reviews.csv", out="runs/clf")
    rows = bertforge.predict("runs/clf/seed-1", "new.csv")
"""

__version__ = "0.1.0"

_API = ("pretrain", "finetune", "predict", "evaluate", "PretrainResult")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module("bertforge.api"), name)
    raise AttributeError(f"module 'bertforge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
