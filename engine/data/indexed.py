"""Sharded, memory-mapped indexed dataset (the layout of Megatron-LM's indexed_dataset, simplified).

A dataset folder holds `meta.json`, `unigram.npy` (token counts, (vocab_size,) int64) and shards
`shard_NNNNNN_MMMM.bin` + `.idx` (task NNNNNN of the prepare plan, its M-th shard):
  .bin  token ids of every sentence of every document, concatenated, no special tokens; dtype uint16 when the
        vocabulary has < 65,536 entries, else int32
  .idx  b"BFIDX001" | uint64 header length | JSON header (tokenizer_hash, source_hash, dtype, counts) padded to 8 |
        sentence_offsets (n_sentences + 1,) int64 token offsets | doc_offsets (n_docs + 1,) int64 sentence offsets |
        doc_hashes (n_docs,) uint64 (blake2b of the document's text; used for the held-out split)
A shard's .idx is renamed into place after its .bin, so an existing .idx means a complete shard.

Opening checks every shard (`check_shard`): the .idx size against its header's counts, the offsets' end points, the
.bin size; a failure is one DataError naming the file. Token files are mapped with their descriptors closed
(engine/data/shards.py), so a dataset holds no open file whatever its shard count. The per-sentence index (the
global sentence starts and lengths, document offsets and hashes) is needed only to build sample maps: it is built
once per dataset into the cache folder (engine/data/cache.py), memory-mapped, and checked in full (offsets
non-decreasing, no empty sentence or document) while it is built."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertforge.data.cache import build_once, default_cache_dir, locate
from bertforge.data.shards import ShardTokens
from bertforge.errors import DataError
from bertforge.io import atomic_dir, atomic_file

MAGIC = b"BFIDX001"
META = "meta.json"
PARTS = "parts"
FORMAT_VERSION = 1
INDEX_VERSION = 1
_HEADER_KEYS = ("dtype", "n_tokens", "n_sentences", "n_docs", "tokenizer_hash")


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
    """The JSON header of a .idx, or None when the file is missing or does not start like a bertforge index."""
    try:
        return _read_header(Path(idx_path))[0]
    except (OSError, DataError):
        return None


def _read_header(idx: Path) -> tuple[dict, int]:
    """(header, byte offset of the arrays). Raises OSError when unreadable, DataError when malformed."""
    with open(idx, "rb") as f:
        return _parse_header(f, idx)


def _parse_header(f, idx: Path) -> tuple[dict, int]:
    if f.read(8) != MAGIC:
        raise DataError("not a bertforge shard index (bad magic bytes)", str(idx))
    raw = f.read(8)
    n = int(np.frombuffer(raw, dtype=np.uint64)[0]) if len(raw) == 8 else -1
    head = f.read(n) if 0 < n < 1 << 24 else b""
    try:
        header = json.loads(head)
    except ValueError:
        header = None
    if not isinstance(header, dict) or len(head) != n or any(k not in header for k in _HEADER_KEYS):
        raise DataError("shard index header is cut or corrupt; prepare the dataset again", str(idx))
    return header, 16 + n


def check_shard(prefix: Path) -> dict:
    """Validate shard `prefix` (.idx size against its header's counts, offsets' end points, .bin size) and return
    its header. Raises DataError naming the file that is missing, cut or inconsistent. One open, two stats."""
    idx, bin_ = prefix.with_suffix(".idx"), prefix.with_suffix(".bin")
    try:
        with open(idx, "rb") as f:
            header, start = _parse_header(f, idx)
            size = os.fstat(f.fileno()).st_size
            ns, nd, nt = (int(header[k]) for k in ("n_sentences", "n_docs", "n_tokens"))
            want = start + 8 * (ns + 1) + 8 * (nd + 1) + 8 * nd
            if size != want:
                raise DataError(f"index is {size} bytes but its header ({ns} sentences, {nd} documents) needs "
                                f"{want}: the file is cut or corrupt; prepare the dataset again (a rerun of "
                                f"`bertforge prepare` rewrites it)", str(idx))
            ends = []
            for pos in (start, start + 8 * ns, start + 8 * (ns + 1), start + 8 * (ns + 1) + 8 * nd):
                f.seek(pos)
                ends.append(int(np.frombuffer(f.read(8), dtype=np.int64)[0]))
    except OSError as exc:
        raise DataError(f"cannot read shard index: {exc.strerror or exc}", str(idx)) from None
    if ends != [0, nt, 0, ns]:
        raise DataError(f"index offsets do not match its header (sentence offsets {ends[0]}..{ends[1]} for {nt} "
                        f"tokens, document offsets {ends[2]}..{ends[3]} for {ns} sentences); prepare the dataset "
                        f"again", str(idx))
    try:
        itemsize = np.dtype(header["dtype"]).itemsize
        bin_size = bin_.stat().st_size
    except (TypeError, OSError) as exc:
        raise DataError(f"cannot use shard tokens: {exc}", str(bin_)) from None
    if bin_size != nt * itemsize:
        want = nt * itemsize
        state = "cut short" if bin_size < want else "longer than its index"
        raise DataError(f"token file is {_size(bin_size)} but its index expects {_size(want)} ({nt:,} tokens x "
                        f"{itemsize} bytes, {header['dtype']}): it is {state}; prepare the dataset again (a rerun of "
                        f"`bertforge prepare` rewrites it)", str(bin_))
    return header


def _size(n: int) -> str:
    """Bytes as '1,234,567 bytes (1.2 MB)' (decimal units)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n:,} bytes ({n / scale:.1f} {unit})"
    return f"{n:,} bytes"


def read_shard_arrays(prefix: Path, header: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sentence_offsets (n_sentences + 1,), doc_offsets (n_docs + 1,), doc_hashes (n_docs,)) of a checked shard,
    read into memory (one shard's worth, one read)."""
    idx = prefix.with_suffix(".idx")
    with open(idx, "rb") as f:
        _, start = _parse_header(f, idx)
        raw = f.read()
    ns, nd = int(header["n_sentences"]), int(header["n_docs"])
    so = np.frombuffer(raw, dtype=np.int64, count=ns + 1)
    do = np.frombuffer(raw, dtype=np.int64, count=nd + 1, offset=8 * (ns + 1))
    dh = np.frombuffer(raw, dtype=np.uint64, count=nd, offset=8 * (ns + 1) + 8 * (nd + 1))
    return so, do, dh


def missing_parts(data_dir: Path) -> str:
    """A sentence on the parts of a --part prepare that are not done yet ('' when there are none)."""
    done = sorted(p.name for p in (data_dir / PARTS).glob("part-*-of-*.json"))
    if not done:
        return ""
    n = int(done[0].split("-of-")[1].split(".")[0])
    have = {int(p.split("-")[1]) for p in done if p.endswith(f"-of-{n:05d}.json")}
    return f"; parts {', '.join(str(k) for k in range(n) if k not in have)} of {n} are not prepared yet"


@dataclass
class SentenceIndex:
    """The per-sentence index of a whole dataset, memory-mapped from the cache (all int64 but doc_hashes)."""

    sentence_starts: np.ndarray   # (n_sentences,) global token position of each sentence's first token
    sentence_lengths: np.ndarray  # (n_sentences,) tokens per sentence (>= 1)
    doc_offsets: np.ndarray       # (n_docs + 1,) sentence offsets of each document
    doc_hashes: np.ndarray        # (n_docs,) uint64


class IndexedDataset:
    """All shards of a prepared folder as one corpus: tokens in one global token space, memory-mapped.

    token_bases (n_shards + 1,) int64: shard s owns global tokens [token_bases[s], token_bases[s+1]).
    `cache_dir` is where the per-sentence index is built once (default: `cache.default_cache_dir`); the index
    views `sentence_starts`, `sentence_lengths`, `doc_offsets`, `doc_hashes` build or map it on first use."""

    def __init__(self, data_dir: str | Path, tokenizer_hash: str | None = None,
                 cache_dir: str | Path | None = None):
        self.dir = Path(data_dir)
        meta_path = self.dir / META
        if not self.dir.exists():
            raise DataError("no such folder; give the output folder of `bertforge prepare`", str(self.dir))
        if not meta_path.exists():
            raise DataError(f"not a prepared dataset (no {META}; run `bertforge prepare`){missing_parts(self.dir)}",
                            str(self.dir))
        self.meta = json.loads(meta_path.read_text())
        self.check_tokenizer(tokenizer_hash)
        names = self.meta["shards"]
        self.headers = [check_shard(self.dir / name) for name in names]
        dtype = np.dtype(self.headers[0]["dtype"]) if names else np.dtype(np.uint16)
        for name, h in zip(names, self.headers):
            if h["tokenizer_hash"] != self.meta["tokenizer_hash"] or np.dtype(h["dtype"]) != dtype:
                raise DataError("shard was prepared with another tokenizer", str(self.dir / name) + ".idx")
        self.shard_tokens = ShardTokens([self.dir / f"{n}.bin" for n in names],
                                        [h["n_tokens"] for h in self.headers], dtype)
        self.token_bases = self.shard_tokens.bases
        self._cache_dir = Path(cache_dir) if cache_dir else None
        self._index: SentenceIndex | None = None

    def check_tokenizer(self, tokenizer_hash: str | None) -> None:
        """Raise DataError (naming meta.json) when the dataset was prepared with another tokenizer; None: no check."""
        stored = str(self.meta.get("tokenizer_hash", ""))
        if tokenizer_hash is not None and stored.split("-")[0] != tokenizer_hash.split("-")[0]:
            raise DataError("dataset was prepared by an older bertforge whose tokenizer check ignored "
                            "normalisation (accents, Chinese characters, cleaning); prepare it again with "
                            "`bertforge prepare` to train on it", str(self.dir / META))
        if tokenizer_hash is not None and stored != tokenizer_hash:
            raise DataError(f"dataset was prepared with another tokenizer (hash {self.meta['tokenizer_hash']}, "
                            f"this tokenizer is {tokenizer_hash}); prepare it again with this tokenizer",
                            str(self.dir / META))

    # ---- what the meta data says ----------------------------------------------------------------------------------
    @property
    def tokenizer_hash(self) -> str:
        return self.meta["tokenizer_hash"]

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def num_docs(self) -> int:
        return int(sum(h["n_docs"] for h in self.headers))

    @property
    def num_sentences(self) -> int:
        return int(sum(h["n_sentences"] for h in self.headers))

    @property
    def num_tokens(self) -> int:
        return int(self.token_bases[-1])

    @property
    def dataset_id(self) -> str:
        """16 hex digits naming this dataset's content (its derived files in the cache are keyed by it)."""
        if "dataset_id" in self.meta:
            return self.meta["dataset_id"]
        ident = [self.tokenizer_hash] + [[n, h.get("source_hash"), h["n_tokens"], h["n_sentences"], h["n_docs"]]
                                         for n, h in zip(self.meta["shards"], self.headers)]
        return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]

    def unigram_counts(self) -> np.ndarray:
        """(vocab_size,) int64 token counts of the corpus (for random replacement by unigram frequency)."""
        return np.load(self.dir / "unigram.npy")

    # ---- tokens ---------------------------------------------------------------------------------------------------
    def tokens(self, start: int, end: int) -> np.ndarray:
        """Global token range [start, end) (never crosses a shard: documents live in one shard), no copy."""
        return self.shard_tokens.tokens(start, end)

    def gather(self, positions: np.ndarray) -> np.ndarray:
        """Token ids at global positions (any shape) -> int64 array of the same shape (one vectorised pass)."""
        return self.shard_tokens.gather(positions)

    # ---- the per-sentence index (built once per dataset into the cache) -------------------------------------------
    @property
    def cache_dir(self) -> Path:
        if self._cache_dir is None:
            self._cache_dir = default_cache_dir(self.dir)
        return self._cache_dir

    def index_path(self) -> Path:
        return locate(f"index-{self.dataset_id}-v{INDEX_VERSION}", self.cache_dir, self.dir)

    def sentence_index(self) -> SentenceIndex:
        """The memory-mapped per-sentence index, built into the cache when missing (atomic folder) by one process
        of all that share the cache folder (bertforge.data.cache.build_once), the others waiting for it."""
        if self._index is None:
            folder = self.index_path()
            build_once(folder, lambda: self._build_index(folder))
            self._index = SentenceIndex(*(np.load(folder / f"{k}.npy", mmap_mode="r") for k in
                                          ("sentence_starts", "sentence_lengths", "doc_offsets", "doc_hashes")))
        return self._index

    def _build_index(self, folder: Path) -> None:
        from numpy.lib.format import open_memmap

        ns, nd = self.num_sentences, self.num_docs
        with atomic_dir(folder) as tmp:
            starts = open_memmap(tmp / "sentence_starts.npy", "w+", np.int64, (ns,))
            lengths = open_memmap(tmp / "sentence_lengths.npy", "w+", np.int64, (ns,))
            docs = open_memmap(tmp / "doc_offsets.npy", "w+", np.int64, (nd + 1,))
            hashes = open_memmap(tmp / "doc_hashes.npy", "w+", np.uint64, (nd,))
            docs[0] = s0 = d0 = 0
            for s, (name, h) in enumerate(zip(self.meta["shards"], self.headers)):
                so, do, dh = read_shard_arrays(self.dir / name, h)
                n_s, n_d = len(so) - 1, len(do) - 1
                if (np.diff(so) <= 0).any() or (np.diff(do) <= 0).any():
                    raise DataError("index has an empty or backwards sentence or document (offsets must increase); "
                                    "prepare the dataset again", str(self.dir / name) + ".idx")
                starts[s0:s0 + n_s] = so[:-1] + self.token_bases[s]
                lengths[s0:s0 + n_s] = np.diff(so)
                docs[d0 + 1:d0 + n_d + 1] = do[1:] + s0
                hashes[d0:d0 + n_d] = dh
                s0, d0 = s0 + n_s, d0 + n_d
            for arr in (starts, lengths, docs, hashes):
                arr.flush()
            del starts, lengths, docs, hashes

    @property
    def sentence_starts(self) -> np.ndarray:
        return self.sentence_index().sentence_starts

    @property
    def sentence_lengths(self) -> np.ndarray:
        return self.sentence_index().sentence_lengths

    @property
    def doc_offsets(self) -> np.ndarray:
        return self.sentence_index().doc_offsets

    @property
    def doc_hashes(self) -> np.ndarray:
        return self.sentence_index().doc_hashes

    def document(self, d: int) -> list[np.ndarray]:
        """Sentences of document d as token-id arrays."""
        index = self.sentence_index()
        a, b = index.doc_offsets[d], index.doc_offsets[d + 1]
        return [self.tokens(int(s), int(s + n)) for s, n in
                zip(index.sentence_starts[a:b], index.sentence_lengths[a:b])]

