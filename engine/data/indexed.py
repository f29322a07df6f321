"""Sharded, memory-mapped indexed dataset (the layout of Megatron-LM's indexed_dataset, simplified).

A dataset folder holds `meta.json`, `unigram.npy` (token counts, (vocab_size,) int64) and shards
`shard_NNNNN.bin` + `shard_NNNNN.idx`:
  .bin  token ids of every sentence of every document, concatenated, no special tokens; dtype uint16 when the
        vocabulary has < 65,536 entries, else int32
  .idx  b"BFIDX001" | uint64 header length | JSON header (tokenizer_hash, source_hash, dtype, counts) padded to 8 |
        sentence_offsets (n_sentences + 1,) int64 token offsets | doc_offsets (n_docs + 1,) int64 sentence offsets |
        doc_hashes (n_docs,) uint64 (blake2b of the document's text; used for the held-out split)
A shard's .idx is renamed into place after its .bin, so an existing .idx means a complete shard."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import DataError
from engine.io import atomic_file

MAGIC = b"BFIDX001"
META = "meta.json"
FORMAT_VERSION = 1


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size < 65536 else np.dtype(np.int32)


def doc_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def write_shard(prefix: Path, tokens: np.ndarray, sentence_offsets: np.ndarray, doc_offsets: np.ndarray,
                doc_hashes: np.ndarray, header: dict) -> None:
    """Write prefix.bin then prefix.idx, each atomically (engine/io.py)."""
    header = dict(header, dtype=tokens.dtype.name, n_tokens=int(tokens.size),
                  n_sentences=int(len(sentence_offsets) - 1), n_docs=int(len(doc_offsets) - 1))
    head = json.dumps(header, sort_keys=True).encode()
    head += b" " * (-len(head) % 8)
    with atomic_file(prefix.with_suffix(".bin"), "wb") as f:  # .bin first: a complete .idx implies its .bin
        f.write(np.ascontiguousarray(tokens).tobytes())
    with atomic_file(prefix.with_suffix(".idx"), "wb") as f:
        f.write(MAGIC + np.uint64(len(head)).tobytes() + head)
        for arr, dt in ((sentence_offsets, np.int64), (doc_offsets, np.int64), (doc_hashes, np.uint64)):
            f.write(np.ascontiguousarray(arr, dtype=dt).tobytes())


def read_shard_header(idx_path: Path) -> dict | None:
    """The JSON header of a .idx, or None when the file is missing or not a complete bertforge index."""
    try:
        with open(idx_path, "rb") as f:
            if f.read(8) != MAGIC:
                return None
            n = int(np.frombuffer(f.read(8), dtype=np.uint64)[0])
            return json.loads(f.read(n))
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Shard:
    tokens: np.ndarray            # (n_tokens,) uint16/int32, memory-mapped
    sentence_offsets: np.ndarray  # (n_sentences + 1,) int64, memory-mapped
    doc_offsets: np.ndarray       # (n_docs + 1,) int64
    doc_hashes: np.ndarray        # (n_docs,) uint64
    header: dict


def open_shard(prefix: Path) -> Shard:
    idx, bin_ = prefix.with_suffix(".idx"), prefix.with_suffix(".bin")
    header = read_shard_header(idx)
    if header is None:
        raise DataError("missing or corrupt shard index", str(idx))
    dtype = np.dtype(header["dtype"])
    if bin_.stat().st_size != header["n_tokens"] * dtype.itemsize:
        raise DataError(f"size {bin_.stat().st_size} does not match its index ({header['n_tokens']} tokens)", str(bin_))
    tokens = (np.memmap(bin_, dtype=dtype, mode="r").view(np.ndarray) if header["n_tokens"]
              else np.zeros(0, dtype))
    raw = np.memmap(idx, dtype=np.uint8, mode="r").view(np.ndarray)
    start = 16 + int(np.frombuffer(raw[8:16].tobytes(), dtype=np.uint64)[0])
    ns, nd = header["n_sentences"], header["n_docs"]
    so = raw[start:start + 8 * (ns + 1)].view(np.int64)
    start += 8 * (ns + 1)
    do = raw[start:start + 8 * (nd + 1)].view(np.int64)
    start += 8 * (nd + 1)
    dh = raw[start:start + 8 * nd].view(np.uint64)
    return Shard(tokens, so, do, dh, header)


class IndexedDataset:
    """All shards of a prepared folder as one corpus, memory-mapped.

    Global views (concatenated over shards, positions in one virtual token space):
      sentence_starts (n_sentences,) int64, sentence_lengths (n_sentences,) int64,
      doc_offsets (n_docs + 1,) int64 into sentences, doc_hashes (n_docs,) uint64,
      token_bases (n_shards + 1,) int64 (shard s owns global tokens [token_bases[s], token_bases[s+1]))."""

    def __init__(self, data_dir: str | Path, tokenizer_hash: str | None = None):
        self.dir = Path(data_dir)
        meta_path = self.dir / META
        if not meta_path.exists():
            raise DataError(f"not a prepared dataset (no {META}; run `bertforge prepare`)", str(self.dir))
        self.meta = json.loads(meta_path.read_text())
        stored = str(self.meta.get("tokenizer_hash", ""))
        if tokenizer_hash is not None and stored.split("-")[0] != tokenizer_hash.split("-")[0]:
            raise DataError("dataset was prepared by an older bertforge whose tokenizer check ignored "
                            "normalisation (accents, Chinese characters, cleaning); prepare it again with "
                            "`bertforge prepare` to train on it", str(meta_path))
        if tokenizer_hash is not None and stored != tokenizer_hash:
            raise DataError(f"dataset was prepared with another tokenizer (hash {self.meta['tokenizer_hash']}, "
                            f"this tokenizer is {tokenizer_hash}); prepare it again with this tokenizer",
                            str(meta_path))
        self.shards = [open_shard(self.dir / name) for name in self.meta["shards"]]
        for name, sh in zip(self.meta["shards"], self.shards):
            if sh.header["tokenizer_hash"] != self.meta["tokenizer_hash"]:
                raise DataError("shard was prepared with another tokenizer", str(self.dir / name) + ".idx")
        n_tok = [len(s.tokens) for s in self.shards]
        self.token_bases = np.concatenate([[0], np.cumsum(n_tok)]).astype(np.int64)
        starts, lengths, docs, hashes, sent_base = [], [], [np.zeros(1, np.int64)], [], 0
        for s, sh in enumerate(self.shards):
            so = np.asarray(sh.sentence_offsets)
            starts.append(so[:-1] + self.token_bases[s])
            lengths.append(np.diff(so))
            docs.append(np.asarray(sh.doc_offsets[1:]) + sent_base)
            hashes.append(np.asarray(sh.doc_hashes))
            sent_base += len(so) - 1
        self.sentence_starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        self.sentence_lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        self.doc_offsets = np.concatenate(docs).astype(np.int64)
        self.doc_hashes = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)

    @property
    def tokenizer_hash(self) -> str:
        return self.meta["tokenizer_hash"]

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def num_docs(self) -> int:
        return len(self.doc_offsets) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.token_bases[-1])

    def unigram_counts(self) -> np.ndarray:
        """(vocab_size,) int64 token counts of the corpus (for random replacement by unigram frequency)."""
        return np.load(self.dir / "unigram.npy")

    def tokens(self, start: int, end: int) -> np.ndarray:
        """Global token range [start, end) (never crosses a shard: documents live in one shard)."""
        s = int(np.searchsorted(self.token_bases, start, side="right")) - 1
        base = self.token_bases[s]
        return self.shards[s].tokens[start - base:end - base]

    def gather(self, positions: np.ndarray) -> np.ndarray:
        """Token ids at global positions (any shape) -> int64 array of the same shape."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(self.shards) == 1:
            return self.shards[0].tokens[positions].astype(np.int64)
        out = np.empty(positions.shape, dtype=np.int64)
        shard = np.searchsorted(self.token_bases, positions, side="right") - 1
        for s in np.unique(shard):
            sel = shard == s
            out[sel] = self.shards[s].tokens[positions[sel] - self.token_bases[s]]
        return out

    def document(self, d: int) -> list[np.ndarray]:
        """Sentences of document d as token-id arrays."""
        a, b = self.doc_offsets[d], self.doc_offsets[d + 1]
        return [self.tokens(int(s), int(s + n)) for s, n in
                zip(self.sentence_starts[a:b], self.sentence_lengths[a:b])]
