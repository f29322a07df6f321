"""MLM-only pretraining samples (`--objective mlm`): RoBERTa's FULL-SENTENCES inputs (Liu et al. 2019, section 4.2)
— contiguous text of one or more documents, an extra [SEP] between documents, one sequence with attention across
the joined documents (unlike --pack, which keeps packed samples apart).

The documents of a split, in corpus order, are grouped by engine/data/grouping.py into `[CLS] block [SEP]`
sequences of exactly max_seq_length tokens, only the corpus tail shorter, so every token of the split appears in
exactly one sequence: an epoch of the sampler sees each token once. Where RoBERTa keeps each sentence whole and
leaves the rest of a sequence empty, a sentence that does not fit continues in the next sequence (as Hugging Face's
run_mlm `group_texts`), so no position is padding. The grouping is O(documents) in C++ and deterministic, so every
rank builds it itself (no file, no barrier).

Same contract as engine/data/pretraining.py's PretrainingDataset: `__getitems__(indices)` gives a `RawBatch` (token
types all 0, sentence labels -100 = none), which PretrainingCollator masks and lays out."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bertforge.data.grouping import group_documents
from bertforge.data.indexed import IndexedDataset
from bertforge.data.pretraining import PretrainingDataset, RawBatch, open_dataset
from bertforge.data.sample_map import split_documents
from bertforge.errors import DataError

NO_LABEL = -100  # sentence labels of MLM-only samples: none (ignored by cross-entropy, as in Hugging Face)


def document_ranges(ds: IndexedDataset, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start (n,), length (n,)) int64 global token range of each of `docs` (a document's sentences are adjacent)."""
    first, last = ds.doc_offsets[docs], ds.doc_offsets[docs + 1] - 1
    start = ds.sentence_starts[first].astype(np.int64)
    return start, (ds.sentence_starts[last] + ds.sentence_lengths[last] - start).astype(np.int64)


class FullSentenceDataset:
    """MLM-only samples of one split of a prepared dataset (map-style; len = sequences).

    data_dir: output of `bertforge prepare`, or an opened IndexedDataset; cache_dir: where the dataset's
    per-sentence index is built once (the grouping itself is in memory, O(documents)); tokenizer: path/dir or tokenizers.Tokenizer (checked against the
    dataset's hash; needed for whole-word masking) or None for the default BERT special ids; split 'train' / 'eval'
    / 'all' with eval_fraction held out by document hash (engine/data/sample_map.split_documents). DataError when
    the split has no documents."""

    def __init__(self, data_dir: str | Path | IndexedDataset, max_seq_length: int = 128, seed: int = 0,
                 split: str = "train", eval_fraction: float = 0.0, tokenizer=None, pad_to_max: bool = True,
                 cache_dir: str | Path | None = None):
        if max_seq_length < 3:
            raise ValueError(f"max_seq_length must be >= 3 ([CLS], a token, [SEP]), got {max_seq_length}")
        self.data, self.special, self.continuation = open_dataset(data_dir, tokenizer, cache_dir)
        self.max_seq_length, self.seed, self.pad_to_max = int(max_seq_length), int(seed), pad_to_max
        docs = split_documents(self.data.doc_hashes, split, eval_fraction)
        docs = docs[self.data.doc_offsets[docs + 1] > self.data.doc_offsets[docs]]  # documents with text
        if len(docs) == 0:
            name = {"eval": "held-out", "train": "training", "all": "whole"}[split]
            fix = f"raise --eval-fraction (now {eval_fraction})" if split == "eval" else "prepare more text"
            raise DataError(f"the {name} split has no documents: {fix}", str(self.data.dir))
        self.doc_start, self.doc_len = document_ranges(self.data, docs)  # (n_docs,) each
        self.grouping = group_documents(self.doc_len, self.max_seq_length - 2, separate=True)

    def __len__(self) -> int:
        return self.grouping.num_blocks

    def __getitem__(self, i: int) -> dict:
        b = self.__getitems__([i])
        n = int(b.lengths[0])
        return {"input_ids": b.input_ids[0, :n], "token_type_ids": b.token_type_ids[0, :n]}

    def __getitems__(self, indices) -> RawBatch:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"sequence index out of range [0, {len(self)})")
        g = self.grouping
        lo, hi = g.block_offsets[idx], g.block_offsets[idx + 1]                    # (B,) piece ranges
        n_pieces = hi - lo
        piece = np.repeat(lo - np.concatenate([[0], np.cumsum(n_pieces)[:-1]]), n_pieces) + np.arange(n_pieces.sum())
        row_of_piece = np.repeat(np.arange(len(idx)), n_pieces)                    # (P,)
        doc, begin, end = g.pieces[piece].T                                        # (P,) each
        units = end - begin
        unit_piece = np.repeat(np.arange(len(piece)), units)                      # (T,) over all units of the batch
        first_unit = np.concatenate([[0], np.cumsum(units)[:-1]])
        u = begin[unit_piece] + np.arange(units.sum()) - first_unit[unit_piece]   # unit index within its document
        row = row_of_piece[unit_piece]
        row_units = np.bincount(row_of_piece, weights=units, minlength=len(idx)).astype(np.int64)  # (B,)
        col = 1 + np.arange(len(u)) - np.repeat(np.concatenate([[0], np.cumsum(row_units)[:-1]]), row_units)
        is_token = u < self.doc_len[doc[unit_piece]]
        lengths = row_units + 2
        S = self.max_seq_length if self.pad_to_max else int(lengths.max(initial=2))
        ids = np.full((len(idx), S), self.special.pad_id, dtype=np.int64)
        ids[:, 0] = self.special.cls_id
        ids[row, col] = self.special.sep_id                                        # separators; tokens below
        ids[row[is_token], col[is_token]] = self.data.gather(self.doc_start[doc[unit_piece[is_token]]] + u[is_token])
        ids[np.arange(len(idx)), lengths - 1] = self.special.sep_id
        special = np.ones((len(idx), S), dtype=bool)
        special[row[is_token], col[is_token]] = False
        labels = np.full(len(idx), NO_LABEL, dtype=np.int64)
        return RawBatch(ids, np.zeros_like(ids), lengths, special, labels, idx)

    masker = PretrainingDataset.masker  # the corpus-unigram (or uniform) 80/10/10 masker, shared
