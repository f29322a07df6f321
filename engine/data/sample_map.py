"""NSP / SOP sample maps: which sentence pairs make the pretraining samples `[CLS] A [SEP] B [SEP]`.

`build_sample_map` (BERT's next-sentence prediction) and `build_sop_map` (ALBERT's sentence-order prediction) run
the C++ builder (csrc/sample_map.cpp, where both algorithms are described); `build_sample_map_ref` is the
pure-Python reference that produces the identical maps (same SplitMix64 stream, same order of draws). `cached_sample_map` builds the map for one dataset split once (rank 0), stores it as .npy keyed by
(dataset, split, seed, max length, probabilities) and memory-maps it on every rank.

A map is (n_samples, 5) int64: [a_start, a_end, b_start, b_end, label] in the dataset's global token positions
(engine.data.indexed.IndexedDataset), half-open ranges; label = 1 for NotNext (NSP) or for a swapped pair (SOP:
the first segment is the later text), 0 otherwise."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine import _csrc
from engine.errors import DataError
from engine.data.splitmix import M64, SplitMix64
from engine.io import save_numpy, write_json

MAP_VERSION = 1
PAIRINGS = ("nsp", "sop")


@dataclass
class SampleMap:
    samples: np.ndarray  # (n_samples, 5) int64
    docs_skipped: int    # documents with fewer than two sentences (NSP: only NotNext partners; SOP: unused)
    tail_dropped: int    # one-sentence chunks at a document's end (no next sentence possible), dropped undrawn


def build_sample_map(sent_start, sent_len, doc_offsets, max_seq_length: int, short_seq_prob: float = 0.1,
                     nsp_prob: float = 0.5, seed: int = 0) -> SampleMap:
    """sent_start, sent_len (n_sent,) and doc_offsets (n_docs+1,) -> SampleMap (C++; see module docstring)."""
    samples, skipped, tail = _csrc.build_sample_map(sent_start, sent_len, doc_offsets, int(max_seq_length),
                                                      float(short_seq_prob), float(nsp_prob), int(seed) & M64)
    return SampleMap(samples, int(skipped), int(tail))


def build_sop_map(sent_start, sent_len, doc_offsets, max_seq_length: int, short_seq_prob: float = 0.1,
                  swap_prob: float = 0.5, seed: int = 0) -> SampleMap:
    """ALBERT's sentence-order pairs (C++): the chunks of `build_sample_map`, B always the continuation of A in the
    same document, the pair swapped with probability swap_prob (label 1). One document suffices; documents with
    fewer than two sentences are unused (docs_skipped). ValueError on malformed input."""
    samples, skipped, tail = _csrc.build_sop_map(sent_start, sent_len, doc_offsets, int(max_seq_length),
                                                   float(short_seq_prob), float(swap_prob), int(seed) & M64)
    return SampleMap(samples, int(skipped), int(tail))


# ---- pure-Python reference -------------------------------------------------------------------------------------
def build_sample_map_ref(sent_start, sent_len, doc_offsets, max_seq_length: int, short_seq_prob: float = 0.1,
                         nsp_prob: float = 0.5, seed: int = 0, sop: bool = False) -> SampleMap:
    """Pure-Python reference of csrc/sample_map.cpp (slow; for tests and the benchmark): `build_sample_map`, or
    `build_sop_map` with sop=True (nsp_prob is then the swap probability)."""
    start, length, doc = (np.asarray(x, dtype=np.int64).tolist() for x in (sent_start, sent_len, doc_offsets))
    n_docs, max_tokens = len(doc) - 1, max_seq_length - 3
    if max_seq_length < 5 or n_docs < (1 if sop else 2) or doc[0] != 0 or doc[-1] != len(start) \
            or any(doc[d + 1] <= doc[d] for d in range(n_docs)) or any(n < 1 for n in length):
        raise ValueError("build_sample_map_ref: invalid input (see csrc/sample_map.cpp for the contract)")
    out: list[tuple[int, int, int, int, int]] = []
    skipped = tail = 0

    def tokens(s0: int, s1: int) -> int:
        return start[s1 - 1] + length[s1 - 1] - start[s0]

    def draw_target(rng: SplitMix64) -> int:
        target = max_tokens
        if rng.uniform() < short_seq_prob:
            target = rng.randint(2, max_tokens)
        return target

    def emit(rng, a0, a1, b0, b1, is_random):
        bits = nbits = 0
        while (a1 - a0) + (b1 - b0) > max_tokens:
            if nbits == 0:
                bits, nbits = rng.next(), 64
            front = bits & 1
            bits >>= 1
            nbits -= 1
            if a1 - a0 > b1 - b0:
                a0, a1 = (a0 + 1, a1) if front else (a0, a1 - 1)
            else:
                b0, b1 = (b0 + 1, b1) if front else (b0, b1 - 1)
        out.append((a0, a1, b0, b1, int(is_random)))

    for d in range(n_docs):
        first, n = doc[d], doc[d + 1] - doc[d]
        if n < 2:
            skipped += 1
            continue
        rng = SplitMix64(seed, d)
        target, chunk_start, chunk_tokens = draw_target(rng), 0, 0
        i = 0
        while i < n:
            chunk_tokens += length[first + i]
            if i != n - 1 and (chunk_tokens < target or i == n - 2):  # never leave a lone last sentence
                i += 1
                continue
            m = i - chunk_start + 1
            if m == 1 and i == n - 1:
                tail += 1
                break
            a_count = 1 if m == 1 else rng.randint(1, m - 1)
            a_s0 = first + chunk_start
            a_s1 = a_s0 + a_count
            la = tokens(a_s0, a_s1)
            coin = rng.uniform() < nsp_prob
            is_random, swapped = coin and not sop, coin and sop
            b_s0 = b_s1 = 0
            if not is_random:
                if m > a_count:
                    b_s0, b_s1 = a_s1, first + i + 1
                else:  # m == 1 and i + 1 < n: B = the following sentences
                    j, lb = i + 1, 0
                    while True:
                        lb += length[first + j]
                        j += 1
                        if not (j < n and la + lb < target):
                            break
                    b_s0, b_s1 = first + i + 1, first + j
                    i = j - 1
            if is_random:
                r = rng.randint(0, n_docs - 2)
                r += r >= d
                rn = doc[r + 1] - doc[r]
                rs = rng.randint(0, rn - 1)
                j, lb = rs, 0
                while True:
                    lb += length[doc[r] + j]
                    j += 1
                    if not (j < rn and lb < target - la):
                        break
                b_s0, b_s1 = doc[r] + rs, doc[r] + j
                i -= m - a_count
            if swapped:
                emit(rng, start[b_s0], start[b_s0] + tokens(b_s0, b_s1), start[a_s0], start[a_s0] + la, True)
            else:
                emit(rng, start[a_s0], start[a_s0] + la, start[b_s0], start[b_s0] + tokens(b_s0, b_s1), is_random)
            chunk_start, chunk_tokens = i + 1, 0
            target = draw_target(rng)
            i += 1
    samples = np.asarray(out, dtype=np.int64).reshape(-1, 5)
    return SampleMap(samples, skipped, tail)


# ---- splits and the on-disk cache --------------------------------------------------------------------------------
def split_documents(doc_hashes: np.ndarray, split: str, eval_fraction: float) -> np.ndarray:
    """Indices of the documents in `split` ('train', 'eval' or 'all'): a document is held out for eval when its
    text hash, scaled to [0, 1), is below eval_fraction; stable under reordering and adding documents."""
    if split == "all" or (eval_fraction <= 0 and split == "train"):
        return np.arange(len(doc_hashes))
    held = (np.asarray(doc_hashes, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53 < eval_fraction
    if split == "eval":
        return np.flatnonzero(held)
    if split == "train":
        return np.flatnonzero(~held)
    raise ValueError(f"split must be 'train', 'eval' or 'all', not {split!r}")


def select_sentences(ds, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IndexedDataset + document indices -> (sent_start, sent_len, doc_offsets) of just those documents."""
    lo, hi = ds.doc_offsets[docs], ds.doc_offsets[docs + 1]
    counts = hi - lo
    doc_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    sent = np.repeat(lo - doc_offsets[:-1], counts) + np.arange(doc_offsets[-1])  # sentence ids, in order
    return ds.sentence_starts[sent], ds.sentence_lengths[sent], doc_offsets


def check_split(ds, docs: np.ndarray, split: str, eval_fraction: float, pairing: str = "nsp") -> None:
    """Refuse a split the pairing cannot draw pairs from, naming the dataset, the split and what to change: for NSP
    fewer than two documents (NotNext partners come from another document); for NSP and SOP no document with two
    sentences (consecutive pairs)."""
    name = {"eval": "held-out", "train": "training", "all": "whole"}[split]
    objective = pairing.upper()
    if len(docs) < (2 if pairing == "nsp" else 1):
        fix = (f"raise --eval-fraction (now {eval_fraction})" if split == "eval" else
               f"lower --eval-fraction (now {eval_fraction}) or prepare more documents" if split == "train" else
               "prepare more documents")
        raise DataError(f"the {name} split has {len(docs)} of the dataset's {ds.num_docs} documents; {objective} "
                        f"needs at least {2 if pairing == 'nsp' else 1}: {fix}", str(ds.dir))
    sentences = ds.doc_offsets[docs + 1] - ds.doc_offsets[docs]
    if not (sentences >= 2).any():
        raise DataError(f"every document of the {name} split ({len(docs)}) has a single sentence, so {objective} "
                        f"has no sentence pairs: separate documents by blank lines and end sentences with punctuation, or "
                        f"give one sentence per line (see `bertforge prepare --help`)", str(ds.dir))


def map_key(ds, split: str, eval_fraction: float, seed: int, max_seq_length: int, short_seq_prob: float,
            nsp_prob: float, pairing: str = "nsp") -> str:
    ident = dict(version=MAP_VERSION, tokenizer=ds.tokenizer_hash, shards=ds.meta["shards"],
                 n_tokens=ds.num_tokens, n_docs=ds.num_docs, split=split,
                 eval_fraction=float(eval_fraction) if split != "all" else None, seed=int(seed),
                 max_seq_length=int(max_seq_length), short_seq_prob=float(short_seq_prob), nsp_prob=float(nsp_prob),
                 pairing=pairing)
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def _dist_rank() -> tuple[int, bool]:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), True
    except ImportError:
        pass
    return 0, False


def cached_sample_map(ds, split: str = "train", eval_fraction: float = 0.0, seed: int = 0, max_seq_length: int = 128,
                      short_seq_prob: float = 0.1, nsp_prob: float = 0.5, cache_dir: str | Path | None = None,
                      pairing: str = "nsp") -> tuple[np.ndarray, Path]:
    """The memory-mapped (n_samples, 5) map of `ds` (an IndexedDataset) and its file. pairing 'nsp' or 'sop'
    (nsp_prob is then the swap probability). Rank 0 builds it when missing (atomic write); under torch.distributed
    every rank waits on a barrier, then memory-maps it."""
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}, not {pairing!r}")
    folder = Path(cache_dir) if cache_dir else ds.dir / "sample_maps"
    key = map_key(ds, split, eval_fraction, seed, max_seq_length, short_seq_prob, nsp_prob, pairing)
    path = folder / f"map-{split}-{key}.npy"
    rank, distributed = _dist_rank()
    docs = split_documents(ds.doc_hashes, split, eval_fraction)
    check_split(ds, docs, split, eval_fraction, pairing)  # on every rank: a refusal must not leave others at the barrier
    if rank == 0 and not path.exists():
        build = build_sop_map if pairing == "sop" else build_sample_map
        sm = build(*select_sentences(ds, docs), max_seq_length, short_seq_prob, nsp_prob, seed)
        save_numpy(path, sm.samples)
        info = dict(n_samples=len(sm.samples), docs=len(docs), docs_skipped=sm.docs_skipped,
                    tail_dropped=sm.tail_dropped, split=split, seed=seed, max_seq_length=max_seq_length,
                    pairing=pairing)
        write_json(folder / f"map-{split}-{key}.json", info)
    if distributed:
        import torch.distributed as dist

        dist.barrier()
    return np.load(path, mmap_mode="r"), path
