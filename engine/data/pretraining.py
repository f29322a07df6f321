"""Pretraining samples: the map-style dataset over the NSP / SOP sample map and the collator that masks a batch and
lays it out (engine/data/batch.py). MLM-only samples: engine/data/full_sentences.py (same RawBatch).

Batches are built vectorised: `PretrainingDataset.__getitems__(indices)` gathers a whole micro batch from the
memory-mapped shards into a `RawBatch`; `PretrainingCollator` masks it and makes the `Batch`. `dataset[i]` gives one
sample as a dict for inspection. The order of samples over ranks and epochs is engine/data/sampler.py's."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertforge.data.batch import Batch, collate
from bertforge.data.indexed import IndexedDataset
from bertforge.data.masking import Masker, build_masker, continuation_ids
from bertforge.data.sample_map import cached_sample_map
from bertforge.data.tokenizer import SpecialIds, load_tokenizer, special_ids, tokenizer_hash


@dataclass
class RawBatch:
    input_ids: np.ndarray       # (B, S) int64, [CLS] A [SEP] B [SEP] then [PAD]
    token_type_ids: np.ndarray  # (B, S) int64, 0 for [CLS] A [SEP], 1 for B [SEP], 0 on padding
    lengths: np.ndarray         # (B,) int64 real tokens per row
    special_mask: np.ndarray    # (B, S) bool, True on [CLS]/[SEP]/[PAD]
    nsp_labels: np.ndarray      # (B,) int64 sentence label: NSP 0 = IsNext, 1 = NotNext (HF's convention); SOP 0 =
    #                             in order, 1 = swapped; -100 = none (MLM only)
    sample_ids: np.ndarray      # (B,) int64 indices into the sample map (mask seeds)


def open_dataset(data_dir: str | Path | IndexedDataset, tokenizer=None, cache_dir: str | Path | None = None
                 ) -> tuple[IndexedDataset, SpecialIds, np.ndarray | None]:
    """(dataset, special ids, '##' continuation ids or None) for a pretraining dataset class: data_dir opened (or an
    opened IndexedDataset) and checked against the tokenizer's hash (path/dir or tokenizers.Tokenizer); without a
    tokenizer, no check, BERT's default special ids 0-4 and no whole-word masking. DataError on a mismatch."""
    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
    expected = tokenizer_hash(tok) if tok is not None else None
    if isinstance(data_dir, IndexedDataset):
        data = data_dir
        data.check_tokenizer(expected)
    else:
        data = IndexedDataset(data_dir, expected, cache_dir)
    special = special_ids(tok) if tok is not None else SpecialIds(0, 1, 2, 3, 4)
    return data, special, continuation_ids(tok) if tok is not None else None


class PretrainingDataset:
    """NSP (or SOP, pairing='sop') + MLM samples of one split of a prepared dataset (map-style; len = samples in the
    map). nsp_prob is the NotNext share, or with SOP the swap share.

    data_dir: output of `bertforge prepare`, or an opened IndexedDataset (shared by several splits); tokenizer:
    path/dir or tokenizers.Tokenizer (checked against the dataset's hash; needed for whole-word masking), or None to
    use the default BERT special ids 0-4 ([PAD] [UNK] [CLS] [SEP] [MASK]). split 'train'/'eval'/'all' with
    eval_fraction held out by document hash. cache_dir: where the sample map is built once and memory-mapped
    (default: bertforge.data.cache.default_cache_dir)."""

    def __init__(self, data_dir: str | Path | IndexedDataset, max_seq_length: int = 128, seed: int = 0,
                 short_seq_prob: float = 0.1, nsp_prob: float = 0.5, split: str = "train", eval_fraction: float = 0.0,
                 tokenizer=None, pad_to_max: bool = True, cache_dir: str | Path | None = None, pairing: str = "nsp"):
        self.data, self.special, self.continuation = open_dataset(data_dir, tokenizer, cache_dir)
        self.max_seq_length, self.seed, self.pad_to_max = int(max_seq_length), int(seed), pad_to_max
        self.pairing = pairing
        self.samples, self.map_path = cached_sample_map(self.data, split, eval_fraction, seed, max_seq_length,
                                                        short_seq_prob, nsp_prob, cache_dir, pairing=pairing)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        b = self.__getitems__([i])
        n = int(b.lengths[0])
        return {"input_ids": b.input_ids[0, :n], "token_type_ids": b.token_type_ids[0, :n],
                "sentence_order_label" if self.pairing == "sop" else "next_sentence_label": int(b.nsp_labels[0])}

    def __getitems__(self, indices) -> RawBatch:
        idx = np.asarray(indices, dtype=np.int64)
        rows = np.asarray(self.samples[np.sort(idx)])[np.argsort(np.argsort(idx))]  # sorted reads from the mmap
        a0, a1, b0, b1 = (rows[:, j:j + 1] for j in range(4))                         # (B, 1) each
        la, lb = a1 - a0, b1 - b0
        lengths = (la + lb + 3)[:, 0]
        S = self.max_seq_length if self.pad_to_max else int(lengths.max())
        pos = np.arange(S, dtype=np.int64)[None, :]                                    # (1, S)
        in_a = (pos >= 1) & (pos <= la)
        in_b = (pos >= la + 2) & (pos <= la + lb + 1)
        src = np.where(in_a, a0 + pos - 1, np.where(in_b, b0 + pos - la - 2, 0))
        ids = np.full((len(idx), S), self.special.pad_id, dtype=np.int64)
        text = in_a | in_b
        ids[text] = self.data.gather(src[text])
        ids[:, 0] = self.special.cls_id
        ids[(pos == la + 1) | (pos == la + lb + 2)] = self.special.sep_id
        token_type = ((pos >= la + 2) & (pos <= la + lb + 2)).astype(np.int64)
        return RawBatch(ids, token_type, lengths, ~text, rows[:, 4].copy(), idx)

    def masker(self, mlm_probability: float = 0.15, random_replacement: str = "unigram") -> Masker:
        """A Masker with this corpus's unigram frequencies ('unigram') or uniform replacements ('uniform')."""
        counts = self.data.unigram_counts() if random_replacement == "unigram" else None
        if random_replacement not in ("unigram", "uniform"):
            raise ValueError("random_replacement must be 'unigram' or 'uniform'")
        return build_masker(self.special.mask_id, self.data.vocab_size, self.special.as_list(), counts,
                            mlm_probability, self.seed)


class PretrainingCollator:
    """RawBatch -> Batch (engine/data/batch.py): masks the batch on the host (BERT's 80/10/10, seeded by (seed,
    epoch, sample id); optional whole-word masking) or, with mask=False, leaves the ids unmasked with their
    special-token masks for device masking; then lays it out padded + unpadded, or packed (pack=True, rows of the
    RawBatch's width S; pad_rows_to fixes the row count)."""

    def __init__(self, masker: Masker, continuation: np.ndarray | None = None, whole_word: bool = False,
                 pack: bool = False, pad_rows_to: int | None = None, pad_id: int = 0, mask: bool = True):
        if whole_word and continuation is None:
            raise ValueError("whole-word masking needs the tokenizer (to know '##' continuation pieces)")
        if pad_rows_to is not None and not pack:
            raise ValueError("pad_rows_to fixes the number of packed rows: it needs pack=True")
        if whole_word and not mask:
            raise ValueError("whole-word masking runs on the host only (mask=True)")
        self.masker, self.continuation, self.whole_word = masker, continuation, whole_word
        self.pack, self.pad_rows_to, self.pad_id, self.mask = pack, pad_rows_to, pad_id, mask

    def __call__(self, batch: RawBatch, epoch: int = 0, mask_seed: int | None = None) -> Batch:
        """epoch seeds the host masks; mask_seed travels with an unmasked batch to the device masker."""
        if not isinstance(batch, RawBatch):
            raise TypeError("PretrainingCollator expects the RawBatch of PretrainingDataset.__getitems__")
        layout = dict(pack=self.pack, pad_rows_to=self.pad_rows_to, pad_id=self.pad_id)
        if not self.mask:
            return collate(batch.input_ids, batch.token_type_ids, batch.lengths, batch.nsp_labels,
                           special_mask=batch.special_mask, mask_seed=mask_seed, **layout)
        ws = ~self.continuation[batch.input_ids] if self.whole_word else None
        ids, labels = self.masker(batch.input_ids, batch.special_mask, epoch, batch.sample_ids, ws)
        return collate(ids, batch.token_type_ids, batch.lengths, batch.nsp_labels, labels=labels, **layout)
