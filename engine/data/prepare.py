"""`bertforge prepare`: raw corpora -> sharded indexed dataset (engine.data.indexed).

Documents are read in order (engine.data.readers) and cut into shards of `docs_per_shard` documents; worker processes
split each document into sentences, tokenize them (no special tokens) and write the shard atomically. A re-run skips
every shard whose .idx exists with the same tokenizer hash and the same source hash (sha256 of its documents' text),
so an interrupted run resumes. meta.json and unigram.npy are written last, so their presence means a complete dataset.

Counted, reported skips: empty documents (reader), documents whose text has no tokens. Documents with one sentence are
kept (they serve as NotNext partners) and counted. A sentence longer than `max_seq_length - 3` tokens is split into
pieces (counted), or refused with file:line when `strict=True`."""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from engine.data import indexed
from engine.errors import DataError
from engine.io import save_numpy, write_json
from engine.data.readers import Document, ReadStats, read_documents
from engine.data.sentences import split_sentences
from engine.data.tokenizer import load_tokenizer, tokenizer_hash


@dataclass
class PrepareStats:
    files: int = 0
    documents: int = 0
    sentences: int = 0
    tokens: int = 0
    text_bytes: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    empty_documents_skipped: int = 0
    single_sentence_documents: int = 0
    long_sentences_split: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, other: dict) -> None:
        for k in ("documents", "sentences", "tokens", "text_bytes", "empty_documents_skipped",
                  "single_sentence_documents", "long_sentences_split"):
            setattr(self, k, getattr(self, k) + other[k])
        self.warnings += other["warnings"][: max(0, 10 - len(self.warnings))]


# ---- worker side --------------------------------------------------------------------------------------------------
_TOK = None


def _init_worker(tokenizer_path: str, in_pool: bool = False) -> None:
    global _TOK
    if in_pool:  # one process per core already; the tokenizer's own thread pool would oversubscribe
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _TOK = load_tokenizer(tokenizer_path)


def tokenize_documents(docs: list[Document], tok, max_sentence_tokens: int, strict: bool):
    """docs -> (tokens (n_tokens,) int64, sentence_offsets (n_sent+1,), doc_offsets (n_docs+1,), doc_hashes, stats)."""
    stats = dict(documents=0, sentences=0, tokens=0, text_bytes=0, empty_documents_skipped=0,
                 single_sentence_documents=0, long_sentences_split=0, warnings=[])
    per_doc = [split_sentences(d.text) for d in docs]
    flat = [s for sents in per_doc for s in sents]
    encoded = tok.encode_batch(flat, add_special_tokens=False) if flat else []
    pieces, sent_len, doc_off, hashes = [], [], [0], []
    k = 0
    for doc, sents in zip(docs, per_doc):
        stats["text_bytes"] += len(doc.text.encode("utf-8"))
        n_before = len(sent_len)
        for _ in sents:
            ids = np.asarray(encoded[k].ids, dtype=np.int64)
            k += 1
            if len(ids) == 0:
                continue
            if len(ids) > max_sentence_tokens:
                if strict:
                    raise DataError(f"sentence of {len(ids)} tokens is longer than max length "
                                    f"({max_sentence_tokens} + 3 special tokens)", doc.source, doc.line)
                stats["long_sentences_split"] += 1
                if len(stats["warnings"]) < 10:
                    stats["warnings"].append(f"{doc.source}:{doc.line}: sentence of {len(ids)} tokens split into "
                                             f"pieces of at most {max_sentence_tokens}")
                for c in range(0, len(ids), max_sentence_tokens):
                    pieces.append(ids[c:c + max_sentence_tokens])
                    sent_len.append(len(pieces[-1]))
            else:
                pieces.append(ids)
                sent_len.append(len(ids))
        n_sent = len(sent_len) - n_before
        if n_sent == 0:
            stats["empty_documents_skipped"] += 1
            continue
        stats["single_sentence_documents"] += n_sent == 1
        stats["documents"] += 1
        doc_off.append(len(sent_len))
        hashes.append(indexed.doc_hash(doc.text))
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    sentence_offsets = np.concatenate([[0], np.cumsum(sent_len, dtype=np.int64)])
    stats["sentences"], stats["tokens"] = len(sent_len), int(tokens.size)
    return tokens, sentence_offsets, np.asarray(doc_off, np.int64), np.asarray(hashes, np.uint64), stats


def _write_shard_task(prefix: str, docs: list[Document], header: dict, max_sentence_tokens: int, strict: bool):
    tokens, so, do, dh, stats = tokenize_documents(docs, _TOK, max_sentence_tokens, strict)
    if tokens.size and tokens.max() >= header["vocab_size"]:
        raise DataError("token id outside the vocabulary", prefix)
    header = dict(header, stats={k: stats[k] for k in ("text_bytes", "single_sentence_documents",
                                                       "long_sentences_split", "empty_documents_skipped")})
    indexed.write_shard(Path(prefix), tokens.astype(indexed.token_dtype(header["vocab_size"])), so, do, dh, header)
    return stats


# ---- main side ----------------------------------------------------------------------------------------------------
def _chunks(docs: Iterator[Document], size: int) -> Iterator[list[Document]]:
    chunk: list[Document] = []
    for d in docs:
        chunk.append(d)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _source_hash(docs: list[Document]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(d.text.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def _clean_tmp(out: Path) -> None:
    for p in out.glob(".*.tmp-*"):
        p.unlink(missing_ok=True)


def prepare(inputs: Iterable[str | Path], tokenizer: str | Path, out_dir: str | Path, *, fmt: str | None = None,
            workers: int = 1, docs_per_shard: int = 4096, max_seq_length: int = 512, strict: bool = False,
            progress: bool = True) -> PrepareStats:
    """Tokenize `inputs` (files/folders) with the tokenizer at `tokenizer` into an indexed dataset at `out_dir`."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    tok = load_tokenizer(tokenizer)
    thash, vocab_size = tokenizer_hash(tok), tok.get_vocab_size()
    meta_path = out / indexed.META
    if meta_path.exists():
        old = json.loads(meta_path.read_text()).get("tokenizer_hash")
        if old != thash:
            raise DataError(f"folder holds a dataset prepared with another tokenizer (hash {old}, this tokenizer is "
                            f"{thash}); use a new output folder", str(out))
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    _clean_tmp(out)
    max_sentence_tokens = max_seq_length - 3
    header_base = {"tokenizer_hash": thash, "vocab_size": vocab_size, "format_version": indexed.FORMAT_VERSION}
    stats, read_stats, names = PrepareStats(), ReadStats(), []
    bar = tqdm(desc="prepare", unit="doc", disable=not progress, dynamic_ncols=True)
    tok_path = str(Path(tokenizer))
    pool = (mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(tok_path, True))
            if workers > 1 else None)
    if pool is None:
        _init_worker(tok_path)
    pending: list = []

    def _collect(block: bool) -> None:
        while pending and (block or pending[0][1].ready() or len(pending) >= 2 * workers):
            n_docs, res = pending.pop(0)
            stats.add(res.get())
            stats.shards_written += 1
            bar.update(n_docs)

    try:
        for s, docs in enumerate(_chunks(read_documents(inputs, fmt, read_stats), docs_per_shard)):
            name = f"shard_{s:05d}"
            names.append(name)
            header = dict(header_base, source_hash=_source_hash(docs))
            old = indexed.read_shard_header(out / f"{name}.idx")
            if old and old.get("source_hash") == header["source_hash"] and old.get("tokenizer_hash") == thash \
                    and (out / f"{name}.bin").exists():
                stats.shards_skipped += 1
                stats.add(_old_stats(old))
                bar.update(len(docs))
                continue
            args = (str(out / name), docs, header, max_sentence_tokens, strict)
            if pool is None:
                stats.add(_write_shard_task(*args))
                stats.shards_written += 1
                bar.update(len(docs))
            else:
                pending.append((len(docs), pool.apply_async(_write_shard_task, args)))
                _collect(block=False)
        _collect(block=True)
    except BaseException:
        if pool is not None:
            pool.terminate()
        _clean_tmp(out)
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    if not names or stats.documents == 0:
        raise DataError("no documents with text in the input", ", ".join(map(str, inputs)))
    for stale in sorted(out.glob("shard_*.idx")):  # shards of an earlier, longer input
        if stale.stem not in names:
            stale.unlink()
            stale.with_suffix(".bin").unlink(missing_ok=True)
    stats.files = read_stats.files
    stats.empty_documents_skipped += read_stats.empty_skipped
    _write_unigram(out, names, vocab_size)
    stats.seconds = time.perf_counter() - t0
    meta = dict(header_base, shards=names, n_docs=stats.documents, n_sentences=stats.sentences,
                n_tokens=stats.tokens, stats={k: v for k, v in asdict(stats).items() if k != "warnings"})
    write_json(meta_path, meta)
    return stats


def _old_stats(header: dict) -> dict:
    s = header.get("stats", {})
    return dict(documents=header["n_docs"], sentences=header["n_sentences"], tokens=header["n_tokens"],
                text_bytes=s.get("text_bytes", 0), empty_documents_skipped=s.get("empty_documents_skipped", 0),
                single_sentence_documents=s.get("single_sentence_documents", 0),
                long_sentences_split=s.get("long_sentences_split", 0), warnings=[])


def _write_unigram(out: Path, names: list[str], vocab_size: int) -> None:
    counts = np.zeros(vocab_size, dtype=np.int64)
    for name in names:
        sh = indexed.open_shard(out / name)
        for c in range(0, len(sh.tokens), 1 << 24):  # 16M-token chunks bound memory
            counts += np.bincount(sh.tokens[c:c + (1 << 24)], minlength=vocab_size)[:vocab_size]
    save_numpy(out / "unigram.npy", counts)
