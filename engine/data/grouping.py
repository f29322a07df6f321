"""Document grouping: consecutive documents packed into blocks of exactly `block_tokens` units that cross document
boundaries, with nothing dropped: every block is full except the corpus tail. The one packer behind the MLM-only
pretraining layout (engine/data/full_sentences.py: RoBERTa's FULL-SENTENCES inputs, Liu et al. 2019, section 4.2)
and domain-adaptive MLM (`pack_token_lists`, the way Hugging Face's run_mlm `group_texts` concatenates and cuts).

The stream is doc 0, [SEP], doc 1, [SEP], ..., doc n-1 (RoBERTa's extra separator between documents; separate=False
joins them without one). A document's units are its tokens 0..len-1 and, when a separator follows it, unit len.
Grouping returns pieces (n_pieces, 3) int64 rows [doc, begin, end] (a half-open unit range of one document inside one
block, in stream order) and block_offsets (n_blocks + 1,): block k holds pieces block_offsets[k] .. [k + 1] - 1.

`group_documents` runs the C++ builder (csrc/grouping.cpp, a sequential walk); `group_documents_ref` is the numpy
reference (a merge of the document and block boundaries) that produces the identical arrays."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bertforge import _csrc


@dataclass
class Grouping:
    pieces: np.ndarray         # (n_pieces, 3) int64 [doc, begin, end] unit ranges, stream order
    block_offsets: np.ndarray  # (n_blocks + 1,) int64 piece offsets of each block

    @property
    def num_blocks(self) -> int:
        return len(self.block_offsets) - 1


def group_documents(doc_len, block_tokens: int, separate: bool = True) -> Grouping:
    """doc_len (n_docs,) tokens per document (each >= 1) -> Grouping into blocks of block_tokens units (C++).
    ValueError for an empty document, block_tokens < 1 or a non-1-D input."""
    pieces, offsets = _csrc.group_documents(np.asarray(doc_len, dtype=np.int64), int(block_tokens), bool(separate))
    return Grouping(pieces, offsets)


def group_documents_ref(doc_len, block_tokens: int, separate: bool = True) -> Grouping:
    """numpy reference of `group_documents`: the pieces are the intervals between the sorted union of document
    starts and block starts in the stream."""
    doc_len = np.asarray(doc_len, dtype=np.int64)
    if doc_len.ndim != 1 or block_tokens < 1 or (doc_len < 1).any():
        raise ValueError("group_documents_ref: invalid input (see csrc/grouping.cpp for the contract)")
    units = doc_len.copy()
    if separate and len(units) > 1:
        units[:-1] += 1                                                   # the separator after each but the last
    doc_starts = np.concatenate([[0], np.cumsum(units)])                  # (n_docs + 1,) stream offsets
    total = int(doc_starts[-1])
    n_blocks = -(-total // block_tokens)
    bounds = np.union1d(doc_starts, np.arange(n_blocks + 1) * block_tokens)
    bounds = bounds[bounds <= total]                                     # (n_pieces + 1,)
    lo, hi = bounds[:-1], bounds[1:]
    doc = np.searchsorted(doc_starts, lo, side="right") - 1
    pieces = np.stack([doc, lo - doc_starts[doc], hi - doc_starts[doc]], axis=1).astype(np.int64).reshape(-1, 3)
    block_offsets = np.searchsorted(lo // block_tokens, np.arange(n_blocks + 1), side="left").astype(np.int64)
    return Grouping(pieces, block_offsets)


def pack_token_lists(token_lists: Sequence[Sequence[int]], max_seq_length: int, cls_id: int, sep_id: int,
                     separate: bool = True) -> list[list[int]]:
    """Pack texts (token-id lists without special tokens, in order) into `[CLS] block [SEP]` sequences of exactly
    max_seq_length tokens, the last one shorter: consecutive texts joined with a [SEP] between them (separate=True)
    and cut wherever a sequence is full, so no token is dropped or repeated (empty texts contribute nothing).
    ValueError when max_seq_length < 3."""
    if max_seq_length < 3:
        raise ValueError(f"max_seq_length must be >= 3 ([CLS], a token, [SEP]), got {max_seq_length}")
    texts = [list(t) for t in token_lists if len(t)]
    if not texts:
        return []
    g = group_documents([len(t) for t in texts], max_seq_length - 2, separate)
    out = []
    for k in range(g.num_blocks):
        seq = [cls_id]
        for doc, begin, end in g.pieces[g.block_offsets[k]:g.block_offsets[k + 1]].tolist():
            text = texts[doc]
            seq += text[begin:min(end, len(text))]
            if end > len(text):
                seq.append(sep_id)                                        # the separator between texts
        seq.append(sep_id)
        out.append(seq)
    return out
