"""What each finetuning task trains on and how it is scored. A task owns its label list, its encoded features
(train / dev / test), the head it puts on the encoder, a collate function and an `evaluate` that runs the model
and returns metrics with one headline number (`metric`). The trainer knows nothing task-specific."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from engine.config import ModelConfig
from engine.finetune import data_ner
from engine.finetune.metrics import classification_metrics, entity_metrics
from engine.heads import BertForSequenceClassification, BertForTokenClassification

TASK_FILE = "bertforge_task.json"  # written beside config.json of every finetuned model


def pad(seqs: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """(B, longest) long tensor of the sequences, right-padded with `value`."""
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


@torch.no_grad()
def batched_logits(model: nn.Module, features: Sequence, collate, batch_size: int) -> list[torch.Tensor]:
    """Logits of every feature in input order (float32, CPU); batches are formed by length to cut padding."""
    model.eval()
    order = sorted(range(len(features)), key=lambda i: len(_ids(features[i])))
    out: list[torch.Tensor | None] = [None] * len(features)
    for k in range(0, len(order), batch_size):
        idx = order[k: k + batch_size]
        batch = collate([features[i] for i in idx])
        batch.pop("labels", None)
        logits = model(**batch).logits.float()
        mask = batch["attention_mask"]
        for j, i in enumerate(idx):
            out[i] = logits[j] if logits.dim() == 2 else logits[j, : int(mask[j].sum())]
    return out  # type: ignore[return-value]


def unpad(seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Concatenated tokens (total,), cu_seqlens (B+1,) int32 and the longest length: the model's unpadded layout,
    in which the dense layers never see a padding token."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int32)
    cu = torch.zeros(len(seqs) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(lengths, 0)
    flat = torch.tensor([t for s in seqs for t in s], dtype=torch.long)
    return flat, cu, int(lengths.max())


def _ids(feature) -> list[int]:
    return feature["input_ids"] if isinstance(feature, dict) else feature.input_ids


@dataclass
class ClassifyTask:
    labels: list[str]
    max_seq_length: int
    train: list[dict] = field(default_factory=list)
    dev: list[dict] = field(default_factory=list)
    test: list[dict] = field(default_factory=list)
    metric: str = "accuracy"
    name: str = "classify"

    def build_model(self, config: ModelConfig) -> nn.Module:
        return BertForSequenceClassification(config, len(self.labels))

    def collate(self, feats: Sequence[dict], unpadded: bool = False) -> dict:
        if unpadded:
            ids, cu, longest = unpad([f["input_ids"] for f in feats])
            batch = {"input_ids": ids, "token_type_ids": unpad([f["token_type_ids"] for f in feats])[0],
                     "cu_seqlens": cu, "max_seqlen": longest}
            if "labels" in feats[0]:
                batch["labels"] = torch.tensor([f["labels"] for f in feats], dtype=torch.long)
            return batch
        ids = pad([f["input_ids"] for f in feats], 0)
        batch = {"input_ids": ids, "token_type_ids": pad([f["token_type_ids"] for f in feats], 0),
                 "attention_mask": pad([[1] * len(f["input_ids"]) for f in feats], 0)}
        if "labels" in feats[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in feats], dtype=torch.long)
        return batch

    def predict(self, model: nn.Module, feats: Sequence[dict], batch_size: int = 64) -> torch.Tensor:
        """(N, C) class probabilities."""
        return torch.stack([l.softmax(-1) for l in batched_logits(model, feats, self.collate, batch_size)])

    def evaluate(self, model: nn.Module, feats: Sequence[dict], batch_size: int = 64) -> dict:
        probs = self.predict(model, feats, batch_size)
        return classification_metrics([f["labels"] for f in feats], probs.argmax(-1).tolist(), self.labels)

    def evaluate_split(self, model: nn.Module, split: str, batch_size: int = 64) -> dict:
        return self.evaluate(model, getattr(self, split), batch_size)

    def info(self) -> dict:
        return {"task": self.name, "max_seq_length": self.max_seq_length, "labels": self.labels}


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
    metric: str = "f1"
    name: str = "ner"

    def build_model(self, config: ModelConfig) -> nn.Module:
        return BertForTokenClassification(config, len(self.labels))

    def collate(self, wins: Sequence[data_ner.Window], unpadded: bool = False) -> dict:
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

    def predict_tags(self, model: nn.Module, wins: Sequence[data_ner.Window], sentences: Sequence[data_ner.Sentence],
                     batch_size: int = 64) -> tuple[list[list[str]], list[list[float]]]:
        """IOB2 tag and its probability for every word of every sentence."""
        logits = batched_logits(model, wins, self.collate, batch_size)
        preds = [l.argmax(-1).tolist() for l in logits]
        tags = data_ner.words_from_windows(wins, preds, sentences, self.labels)
        probs: list[list[float]] = [[0.0] * len(s.tokens) for s in sentences]
        for win, l in zip(wins, logits):
            p = l.softmax(-1).max(-1).values.tolist()
            for pos, w in enumerate(win.word_index):
                if w >= 0:
                    probs[win.sentence][w] = p[pos]
        return tags, probs

    def evaluate_split(self, model: nn.Module, split: str, batch_size: int = 64) -> dict:
        sents = self.sentences[split]
        tags, _ = self.predict_tags(model, getattr(self, split), sents, batch_size)
        return entity_metrics([s.tags for s in sents], tags)

    def info(self) -> dict:
        return {"task": self.name, "max_seq_length": self.max_seq_length, "labels": self.labels,
                "scheme": self.scheme, "label_all_subwords": self.label_all_subwords, "stride": self.stride}
