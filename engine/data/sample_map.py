"""NSP / SOP sample maps: which sentence pairs make the pretraining samples `[CLS] A [SEP] B [SEP]`.

`build_sample_map` (BERT's next-sentence prediction) and `build_sop_map` (ALBERT's sentence-order prediction) run
the C++ builder (csrc/sample_map.cpp, where both algorithms are described); `build_sample_map_ref` is the
pure-Python reference that produces the identical maps (same SplitMix64 stream, same order of draws).
`cached_sample_map` builds the map for one dataset split once (engine/data/cache.py `build_once`), stores it as .npy
keyed by (dataset, split, seed, max length, probabilities, pairing) in the cache folder and memory-maps it on every
rank.

A map is (n_samples, 5) int64: [a_start, a_end, b_start, b_end, label] in the dataset's global token positions
(bertforge.data.indexed.IndexedDataset), half-open ranges; label = 1 for NotNext (NSP) or for a swapped pair (SOP:
the first segment is the later text), 0 otherwise."""
from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertforge import _csrc
from bertforge.data.cache import build_once, locate
from bertforge.errors import DataError
from bertforge.data.splitmix import M64, SplitMix64
from bertforge.io import save_numpy, write_json

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
def _truncate_pair(rng: SplitMix64, a0: int, a1: int, b0: int, b1: int, max_tokens: int) -> tuple[int, int, int, int]:
    """Token ranges [a0, a1), [b0, b1) cut to `max_tokens` together: one random bit per token removed (front or
    back) from the longer side, 64 bits per draw (csrc/sample_map.cpp's truncation)."""
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
    return a0, a1, b0, b1


def _random_b(rng: SplitMix64, doc: list, length: list, d: int, budget: int) -> tuple[int, int]:
    """NSP's random B: sentences [s0, s1) from a random start in a random other document than `d`, taken while
    their tokens stay under `budget` (at least one)."""
    n_docs = len(doc) - 1
    r = rng.randint(0, n_docs - 2)
    r += r >= d
    rn = doc[r + 1] - doc[r]
    rs = rng.randint(0, rn - 1)
    j, lb = rs, 0
    while True:
        lb += length[doc[r] + j]
        j += 1
        if not (j < rn and lb < budget):
            break
    return doc[r] + rs, doc[r] + j


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
        out.append(_truncate_pair(rng, a0, a1, b0, b1, max_tokens) + (int(is_random),))

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
                b_s0, b_s1 = _random_b(rng, doc, length, d, target - la)
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
def held_out(doc_hashes: np.ndarray, eval_fraction: float) -> np.ndarray:
    """(n,) bool: a document is held out for eval when its text hash, scaled to [0, 1), is below eval_fraction."""
    return (np.asarray(doc_hashes, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53 < eval_fraction


def split_documents(doc_hashes: np.ndarray, split: str, eval_fraction: float) -> np.ndarray:
    """Indices of the documents in `split` ('train', 'eval' or 'all'), by `held_out`; stable under reordering and
    adding documents."""
    if split not in ("train", "eval", "all"):
        raise ValueError(f"split must be 'train', 'eval' or 'all', not {split!r}")
    if split == "all" or (eval_fraction <= 0 and split == "train"):
        return np.arange(len(doc_hashes))
    held = held_out(doc_hashes, eval_fraction)
    return np.flatnonzero(held if split == "eval" else ~held)


def select_sentences(ds, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IndexedDataset + document indices -> (sent_start, sent_len, doc_offsets) of just those documents (in
    memory; `cached_sample_map` selects chunk by chunk into memory-mapped files instead)."""
    lo, hi = ds.doc_offsets[docs], ds.doc_offsets[docs + 1]
    counts = hi - lo
    doc_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    sent = np.repeat(lo - doc_offsets[:-1], counts) + np.arange(doc_offsets[-1])  # sentence ids, in order
    return ds.sentence_starts[sent], ds.sentence_lengths[sent], doc_offsets


def _chosen(hashes: np.ndarray, a: int, b: int, split: str, eval_fraction: float) -> np.ndarray:
    """Indices in [a, b) of the documents in `split` (`split_documents` on a slice)."""
    if split == "all" or (eval_fraction <= 0 and split == "train"):
        return np.arange(a, b)
    held = held_out(hashes[a:b], eval_fraction)
    return a + np.flatnonzero(held if split == "eval" else ~held)


def check_split(ds, split: str, eval_fraction: float, pairing: str = "nsp", chunk: int = 1 << 20) -> None:
    """Refuse a split the pairing cannot draw pairs from, naming the dataset, the split and what to change: for NSP
    fewer than two documents (NotNext partners come from another document); for NSP and SOP no document with two
    sentences (consecutive pairs). Reads the per-sentence index `chunk` documents at a time (flat memory)."""
    index = ds.sentence_index()
    offsets, hashes = index.doc_offsets, index.doc_hashes
    n_docs = multi = 0
    for a in range(0, len(hashes), chunk):
        docs = _chosen(hashes, a, min(a + chunk, len(hashes)), split, eval_fraction)
        n_docs += len(docs)
        multi += int(((offsets[docs + 1] - offsets[docs]) >= 2).sum())
    name = {"eval": "held-out", "train": "training", "all": "whole"}[split]
    objective = pairing.upper()
    if n_docs < (2 if pairing == "nsp" else 1):
        fix = (f"raise --eval-fraction (now {eval_fraction})" if split == "eval" else
               f"lower --eval-fraction (now {eval_fraction}) or prepare more documents" if split == "train" else
               "prepare more documents")
        raise DataError(f"the {name} split has {n_docs} of the dataset's {ds.num_docs} documents; {objective} "
                        f"needs at least {2 if pairing == 'nsp' else 1}: {fix}", str(ds.dir))
    if multi == 0:
        raise DataError(f"every document of the {name} split ({n_docs}) has a single sentence, so {objective} "
                        f"has no sentence pairs: separate documents by blank lines and end sentences with "
                        f"punctuation, or give one sentence per line and prepare with `--format lines`", str(ds.dir))


def _select_to_files(ds, split: str, eval_fraction: float, folder: Path,
                     chunk: int = 1 << 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`select_sentences` of `split`, written chunk by chunk of `chunk` documents into memory-mapped .npy files in
    `folder` (the caller's memory stays flat in corpus size). Returns the three arrays, memory-mapped."""
    from numpy.lib.format import open_memmap

    index = ds.sentence_index()
    offsets, hashes, n_docs = index.doc_offsets, index.doc_hashes, len(index.doc_hashes)

    def chosen(a: int, b: int) -> np.ndarray:
        return _chosen(hashes, a, b, split, eval_fraction)

    n_sel = n_sent = 0
    for a in range(0, n_docs, chunk):
        docs = chosen(a, min(a + chunk, n_docs))
        n_sel += len(docs)
        n_sent += int((offsets[docs + 1] - offsets[docs]).sum())
    folder.mkdir(parents=True, exist_ok=True)
    starts = open_memmap(folder / "sent_start.npy", "w+", np.int64, (n_sent,))
    lengths = open_memmap(folder / "sent_len.npy", "w+", np.int64, (n_sent,))
    doc_offsets = open_memmap(folder / "doc_offsets.npy", "w+", np.int64, (n_sel + 1,))
    doc_offsets[0] = d0 = s0 = 0
    for a in range(0, n_docs, chunk):
        docs = chosen(a, min(a + chunk, n_docs))
        lo, hi = offsets[docs], offsets[docs + 1]
        counts = hi - lo
        ends = np.cumsum(counts)
        sent = np.repeat(lo - (ends - counts), counts) + np.arange(ends[-1] if len(ends) else 0)
        starts[s0:s0 + len(sent)] = index.sentence_starts[sent]
        lengths[s0:s0 + len(sent)] = index.sentence_lengths[sent]
        doc_offsets[d0 + 1:d0 + 1 + len(docs)] = ends + s0
        s0, d0 = s0 + len(sent), d0 + len(docs)
    for arr in (starts, lengths, doc_offsets):
        arr.flush()
    return starts, lengths, doc_offsets


def map_key(ds, split: str, eval_fraction: float, seed: int, max_seq_length: int, short_seq_prob: float,
            nsp_prob: float, pairing: str = "nsp") -> str:
    ident = dict(version=MAP_VERSION, dataset=ds.dataset_id, tokenizer=ds.tokenizer_hash, n_tokens=ds.num_tokens,
                 n_docs=ds.num_docs, split=split, eval_fraction=float(eval_fraction) if split != "all" else None,
                 seed=int(seed), max_seq_length=int(max_seq_length), short_seq_prob=float(short_seq_prob),
                 nsp_prob=float(nsp_prob), pairing=pairing)
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def cached_sample_map(ds, split: str = "train", eval_fraction: float = 0.0, seed: int = 0, max_seq_length: int = 128,
                      short_seq_prob: float = 0.1, nsp_prob: float = 0.5, cache_dir: str | Path | None = None,
                      pairing: str = "nsp") -> tuple[np.ndarray, Path]:
    """The memory-mapped (n_samples, 5) map of `ds` (an IndexedDataset) and its file in the cache folder
    (`cache_dir`, default bertforge.data.cache's). pairing 'nsp' or 'sop' (nsp_prob is then the swap probability).
    It is built once (bertforge.data.cache.build_once: one process of all that share the cache folder, the others
    waiting on its lock), from the dataset's per-sentence index selected into temporary memory-mapped files; every
    rank then memory-maps it. The builder's memory peaks at the map itself (40 bytes a sample), not at the corpus's
    sentence index. DataError (`check_split`, in the builder, raised again in every process that waited on it) when
    the split cannot give pairs."""
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}, not {pairing!r}")
    folder = Path(cache_dir) if cache_dir else ds.cache_dir
    key = map_key(ds, split, eval_fraction, seed, max_seq_length, short_seq_prob, nsp_prob, pairing)
    path = locate(f"map-{split}-{key}.npy", folder, ds.dir)

    def build() -> None:
        check_split(ds, split, eval_fraction, pairing)
        with tempfile.TemporaryDirectory(prefix=f".select-{split}-", dir=_mkdir(folder)) as tmp:
            selected = _select_to_files(ds, split, eval_fraction, Path(tmp))
            builder = build_sop_map if pairing == "sop" else build_sample_map
            sm = builder(*selected, max_seq_length, short_seq_prob, nsp_prob, seed)
            del selected
        save_numpy(path, sm.samples)
        info = dict(n_samples=len(sm.samples), docs_skipped=sm.docs_skipped, tail_dropped=sm.tail_dropped,
                    split=split, seed=seed, max_seq_length=max_seq_length, dataset=ds.dataset_id, pairing=pairing)
        write_json(path.with_suffix(".json"), info)

    build_once(path, build)
    return np.load(path, mmap_mode="r"), path


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder
