"""What each finetuning task trains on and how it is scored. A task owns its label list, its encoded features
(train / dev / test), the head it puts on the encoder, and four functions the task-agnostic trainer and evaluator
(engine/finetuning/trainer.py, evaluation.py) call:
  collate(features, unpadded, seed)  -> a batch of CPU tensors (labels included when the features have them)
  loss(model, batch)                 -> the training loss of one micro batch (a 0-dim tensor)
  outputs(model, batch)              -> one small CPU result per example (probabilities, tag ids, ...)
  metrics(split, outputs)            -> the split's metrics from every example's result, with one headline number
                                        under `metric`
Outputs are per example so that evaluation can be sharded over ranks and gathered in input order."""
from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bertforge.config import ModelConfig
from bertforge.finetuning import data_ner
from bertforge.finetuning.metrics import classification_metrics, collapse, entity_metrics, token_metrics
from bertforge.heads import BertForSequenceClassification, BertForTokenClassification
from bertforge.kernels.padding import cu_seqlens_from_lengths

TASK_FILE = "bertforge_task.json"  # written beside config.json of every finetuned model


def pad(seqs: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """(B, longest) long tensor of the sequences, right-padded with `value`."""
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def unpad(seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Concatenated tokens (total,), cu_seqlens (B+1,) int32 and the longest length: the model's unpadded layout,
    in which the dense layers never see a padding token."""
    cu, longest = cu_seqlens_from_lengths([len(s) for s in seqs])
    flat = torch.tensor(list(itertools.chain.from_iterable(seqs)), dtype=torch.long)
    return flat, cu, longest


def token_rows(values: torch.Tensor, batch: dict) -> list[torch.Tensor]:
    """Per-token values (B, S, ...) padded or (total, ...) unpadded -> one (len_i, ...) tensor per sequence."""
    if "cu_seqlens" in batch:
        cu = batch["cu_seqlens"].tolist()
        return [values[a:b] for a, b in zip(cu, cu[1:])]
    lengths = batch["attention_mask"].sum(1).tolist()
    return [values[i, :n] for i, n in enumerate(lengths)]


def feature_length(feature) -> int:
    """Tokens of a feature (a dict or a Window with input_ids); 0 for anything else (batches sort by it)."""
    ids = feature.get("input_ids") if isinstance(feature, dict) else getattr(feature, "input_ids", None)
    return len(ids) if ids is not None else 0


def balanced_weights(label_ids: Sequence[int], num_labels: int) -> list[float]:
    """scikit-learn's 'balanced' class weights n / (classes x n_c) over the classes present in `label_ids`; a class
    absent from them gets 0 (it is never a training target)."""
    counts = Counter(label_ids)
    present = len(counts)
    return [len(label_ids) / (present * counts[c]) if counts[c] else 0.0 for c in range(num_labels)]


@dataclass
class ClassifyTask:
    labels: list[str]
    max_seq_length: int
    train: list[dict] = field(default_factory=list)
    dev: list[dict] = field(default_factory=list)
    test: list[dict] = field(default_factory=list)
    metric: str = "accuracy"
    class_weights: list[float] | None = None
    """Per-class weights of the cross-entropy (--class-weight balanced), or None."""
    pooling: str = "cls"
    """'cls' ([CLS] + pooler) or 'mean' (mean of the real tokens' states); see bertforge.heads."""
    name: str = "classify"

    def build_model(self, config: ModelConfig) -> nn.Module:
        return BertForSequenceClassification(config, len(self.labels), pooling=self.pooling)

    def collate(self, feats: Sequence[dict], unpadded: bool = False, seed: int | None = None) -> dict:
        if unpadded:
            ids, cu, longest = unpad([f["input_ids"] for f in feats])
            batch = {"input_ids": ids, "token_type_ids": unpad([f["token_type_ids"] for f in feats])[0],
                     "cu_seqlens": cu, "max_seqlen": longest}
        else:
            batch = {"input_ids": pad([f["input_ids"] for f in feats], 0),
                     "token_type_ids": pad([f["token_type_ids"] for f in feats], 0),
                     "attention_mask": pad([[1] * len(f["input_ids"]) for f in feats], 0)}
        if "labels" in feats[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in feats], dtype=torch.long)
        return batch

    def loss(self, model, batch: dict, num_items_in_batch: float | None = None) -> torch.Tensor:
        """Cross-entropy of the micro batch: the mean over its examples, or with class weights w the weighted
        sum_i w[y_i] * nll_i divided by `num_items_in_batch`, the whole step's sum of w[y] over all micro batches
        and ranks (bertforge.train.token_loss.step_num_items(weights=w)), so the step's loss is the weighted mean
        of torch's `cross_entropy(weight=w)` over the global batch however it is cut; without it, by this micro
        batch's own sum_i w[y_i]."""
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits.float()
        labels = batch["labels"]
        if self.class_weights is None:
            return F.cross_entropy(logits, labels)
        weight = torch.tensor(self.class_weights, dtype=torch.float32, device=logits.device)
        if num_items_in_batch is None:
            return F.cross_entropy(logits, labels, weight=weight)
        return F.cross_entropy(logits, labels, weight=weight, reduction="sum") / num_items_in_batch

    def outputs(self, model, batch: dict) -> list[torch.Tensor]:
        """(C,) class probabilities per example."""
        out = model(**{k: v for k, v in batch.items() if k != "labels"})
        return list(out.logits.float().softmax(-1).cpu())

    def metrics(self, split: str, outputs: Sequence[torch.Tensor]) -> dict:
        feats = getattr(self, split)
        m = classification_metrics([f["labels"] for f in feats], [int(p.argmax()) for p in outputs], self.labels)
        m["collapsed"] = collapse(m)
        return m

    def majority(self) -> str | None:
        """The most frequent training label."""
        counts = Counter(f["labels"] for f in self.train if "labels" in f)
        return self.labels[counts.most_common(1)[0][0]] if counts else None

    def info(self) -> dict:
        return {"task": self.name, "max_seq_length": self.max_seq_length, "labels": self.labels,
                "class_weights": self.class_weights, "pooling": self.pooling}


@dataclass
class NerTask:
    labels: list[str]
    max_seq_length: int
    label_all_subwords: bool = False
    stride: int = 32
    scheme: str = "iob2"
    train: list[data_ner.Window] = field(default_factory=list)
    dev: list[data_ner.Window] = field(default_factory=list)
    test: list[data_ner.Window] = field(default_factory=list)
    sentences: dict[str, list[data_ner.Sentence]] = field(default_factory=dict)  # split -> sentences
    name: str = "ner"

    @property
    def metric(self) -> str:
        """Entity F1 for entity schemes; token accuracy for plain tags."""
        return "accuracy" if self.scheme == "plain" else "f1"

    def build_model(self, config: ModelConfig) -> nn.Module:
        return BertForTokenClassification(config, len(self.labels))

    def collate(self, wins: Sequence[data_ner.Window], unpadded: bool = False, seed: int | None = None) -> dict:
        if unpadded:
            ids, cu, longest = unpad([w.input_ids for w in wins])
            batch = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "cu_seqlens": cu,
                     "max_seqlen": longest}
            if wins[0].labels is not None:
                batch["labels"] = unpad([w.labels for w in wins])[0]
            return batch
        batch = {"input_ids": pad([w.input_ids for w in wins], 0),
                 "attention_mask": pad([[1] * len(w.input_ids) for w in wins], 0)}
        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        if wins[0].labels is not None:
            batch["labels"] = pad([w.labels for w in wins], -100)
        return batch

    token_labels = "labels"
    """The batch key of the per-token labels: the loss is token-level (bertforge.train.token_loss)."""

    def loss(self, model, batch: dict, num_items_in_batch: int | None = None) -> torch.Tensor:
        """Cross-entropy over the labelled sub-words of the micro batch: their mean, or with num_items_in_batch
        (the step's labelled sub-words over all micro batches and ranks) their sum divided by it."""
        return model(**batch, num_items_in_batch=num_items_in_batch).loss

    def outputs(self, model, batch: dict) -> list[tuple[list[int], list[float]]]:
        """(predicted label id, its probability) of every token, per window."""
        out = model(**{k: v for k, v in batch.items() if k != "labels"})
        rows = []
        for logits in token_rows(out.logits.float().cpu(), batch):
            best = logits.softmax(-1).max(-1)
            rows.append((best.indices.tolist(), best.values.tolist()))
        return rows

    def tags(self, wins: Sequence[data_ner.Window], outputs: Sequence, sentences: Sequence[data_ner.Sentence]
             ) -> tuple[list[list[str]], list[list[float]]]:
        """The tag (IOB2, or plain) and its probability for every word of every sentence."""
        tags = data_ner.words_from_windows(wins, [ids for ids, _ in outputs], sentences, self.labels)
        probs: list[list[float]] = [[0.0] * len(s.tokens) for s in sentences]
        for win, (_, p) in zip(wins, outputs):
            for pos, w in enumerate(win.word_index):
                if w >= 0:
                    probs[win.sentence][w] = p[pos]
        return tags, probs

    def metrics(self, split: str, outputs: Sequence) -> dict:
        sents = self.sentences[split]
        tags, _ = self.tags(getattr(self, split), outputs, sents)
        gold = [s.tags for s in sents]
        return token_metrics(gold, tags, self.labels) if self.scheme == "plain" else entity_metrics(gold, tags)

    def majority(self) -> str | None:
        return None

    def info(self) -> dict:
        return {"task": self.name, "max_seq_length": self.max_seq_length, "labels": self.labels,
                "scheme": self.scheme, "label_all_subwords": self.label_all_subwords, "stride": self.stride}
