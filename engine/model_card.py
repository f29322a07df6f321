"""What an export says about itself, so that it serves as it trained (bottom layer: json and files only).

- `fit_tokenizer_files(folder, max_length)`: the exported tokenizer carries the trained length:
  tokenizer_config.json `model_max_length` (what transformers' `truncation=True` cuts to) and tokenizer.json's
  truncation (longest first, right, at max_length) with no fixed padding (a base tokenizer's `padding: 128` would
  pad every text to 128 and its truncation cut at the base's length). Format: tokenizers' tokenizer.json
  (`truncation`: {direction, max_length, strategy, stride}; `padding`: null), transformers' tokenizer_config.json.
- `model_card(...)`: the README.md of every export: objective or task, data and its hash, steps/tokens, held-out
  metrics against their baselines, how to load.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def fit_tokenizer_files(folder: str | Path, max_length: int) -> None:
    """Rewrite (in place; the caller's folder is a temporary one renamed when complete) the tokenizer files of
    `folder` to truncate at `max_length` tokens ([CLS] and [SEP] included) and pad to no fixed length."""
    folder = Path(folder)
    config = folder / "tokenizer_config.json"
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        data["model_max_length"] = int(max_length)
        config.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    fast = folder / "tokenizer.json"
    if fast.is_file():
        data = json.loads(fast.read_text(encoding="utf-8"))
        data["truncation"] = {"direction": "Right", "max_length": int(max_length), "strategy": "LongestFirst",
                              "stride": 0}
        data["padding"] = None
        fast.write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")


def _value(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def model_card(title: str, facts: dict[str, Any], metrics: dict[str, Any] | None = None,
               baselines: dict[str, Any] | None = None, load: str = "") -> str:
    """Markdown: a title, a table of `facts` (objective/task, data, hash, steps, tokens, ...; None values left
    out), held-out `metrics` beside their `baselines` (same keys; '-' where there is none), and the `load` code."""
    lines = [f"# {title}", "", "Written by bertforge at export.", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {_value(v)} |" for k, v in facts.items() if v is not None]
    if metrics:
        baselines = baselines or {}
        lines += ["", "## Held-out metrics", "", "| metric | this model | baseline |", "|---|---|---|"]
        lines += [f"| {k} | {_value(v)} | {_value(baselines[k]) if k in baselines else '-'} |"
                  for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if load:
        lines += ["", "## How to load", "", "```python", load.strip(), "```"]
    return "\n".join(lines) + "\n"


def finetune_card(info: dict) -> str:
    """The card of a finetuned seed from its task file's content (`task`, `labels`, `max_seq_length`, `args`: the
    FinetuneConfig as a dict, `result`: the seed's dev / test metrics)."""
    args, result = info.get("args", {}), info.get("result", {})
    facts = {"task": info.get("task"), "labels": ", ".join(map(str, info.get("labels") or [])) or None,
             "base model": args.get("model"), "seed": result.get("seed"),
             "max_seq_length (trained; the tokenizer truncates here)": info.get("max_seq_length"),
             "epochs": args.get("epochs"), "optimizer steps": result.get("steps"), "peak lr": args.get("lr"),
             "global batch": args.get("global_batch")}
    metrics = {f"{split} {k}": v for split in ("dev", "test") for k, v in (result.get(split) or {}).items()
               if k != "n"}
    head = "AutoModelForTokenClassification" if info.get("task") == "ner" else "AutoModelForSequenceClassification"
    kind = "token-classification" if info.get("task") == "ner" else "text-classification"
    if info.get("pooling") == "mean":  # transformers' classifier pools [CLS]: the note below gives the right code
        load = ("bertforge predict PATH FILE  # mean-pooled: transformers' pipeline / "
                "AutoModelForSequenceClassification pool [CLS] and predict otherwise; see the note below")
    else:
        load = (f"from transformers import pipeline\npipe = pipeline(\"{kind}\", model=PATH)\n"
                f"pipe(texts, truncation=True)  # {head}; or: bertforge predict PATH FILE")
    return model_card(f"bertforge finetuned {info.get('task')}", facts, metrics, load=load)


def pretrain_card(architecture: str, train: dict, step: int, data: dict | None, held_out: dict | None) -> str:
    """The card of a pretraining export: `train` (PretrainConfig.to_flat()), the checkpoint's `step`, the prepared
    dataset's meta.json (`data`: its dataset_id and tokenizer hash) and the last held-out evaluation of
    metrics.jsonl (`held_out`: mlm_acc beside the unigram baseline mlm_unigram_acc)."""
    data = data or {}
    tokens = step * train.get("global_batch", 0) * train.get("max_seq_length", 0)
    facts = {"objective": train.get("objective"), "architecture": architecture, "data": train.get("data_dir") or
             (f"synthetic ({train.get('synthetic_vocab')} tokens)" if train.get("synthetic_vocab") else None),
             "dataset id (hash)": data.get("dataset_id"), "tokenizer hash": data.get("tokenizer_hash"),
             "optimizer steps": step, "tokens (at most; steps x global batch x max_seq_length)": tokens or None,
             "max_seq_length": train.get("max_seq_length"), "precision": train.get("precision")}
    metrics = baselines = None
    if held_out:
        metrics = {k: held_out[k] for k in ("mlm_acc", "nsp_acc", "sop_acc", "mlm_loss") if k in held_out}
        baselines = {"mlm_acc": held_out["mlm_unigram_acc"]} if "mlm_unigram_acc" in held_out else {}
        if "nsp_acc" in metrics or "sop_acc" in metrics:
            baselines.update({k: 0.5 for k in ("nsp_acc", "sop_acc") if k in metrics})  # balanced 2-way task
    load = (f"from transformers import pipeline\npipe = pipeline(\"fill-mask\", model=PATH)\n"
            f"# or: bertforge finetune classify --model PATH ...  ({architecture})")
    return model_card(f"bertforge pretrained encoder ({train.get('objective')})", facts, metrics, baselines, load)
