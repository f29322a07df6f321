"""`bertforge prepare`: raw corpora -> sharded indexed dataset (bertforge.data.indexed), across cores and nodes.

Plan (main process; it reads only the bytes around each cut and Parquet footers): the inputs' files become pieces
(bertforge.data.readers.plan_pieces: byte ranges at record boundaries, Parquet row-group ranges, whole files) and
consecutive pieces are grouped into tasks of about `shard_bytes`. The plan depends on the inputs, `shard_bytes`,
the format and text column only — not on the worker count or the part — so every run makes the same shards:
byte-identical across worker counts, resumable, and N nodes (`part=K/N`) each prepare a disjoint share of the tasks
(contiguous, balanced by bytes) into one shared folder, with no copying afterwards.

Worker (one task at a time; bertforge.data.workers): reads its pieces itself (streamed), splits documents into
sentences (bertforge.data.sentences; with format 'lines' every non-empty line is one sentence), tokenizes them (no special tokens) and writes shards `shard_TTTTTT_JJJJ`
atomically — a shard is closed once its documents' text reaches `shard_bytes`. A shard whose .idx is complete (and
passes indexed.check_shard) with the same source hash (sha256 of its documents' text), tokenizer and sentence limit
is kept: an interrupted run (even kill -9) resumes. It returns its counts and unigram counts.

Main: hands tasks to workers, sums what they return, writes the part's manifest (parts/part-K-of-N.json and its
unigram counts); the run that completes the set of parts writes unigram.npy, then meta.json (their presence means
a complete dataset) and removes shards of an earlier, different plan. A worker that dies (the out-of-memory killer)
stops prepare with one line naming its shard; the finished shards stay valid for the rerun.

Counted, reported skips: empty documents (reader), documents whose text has no tokens. Documents with one sentence
are kept (they serve as NotNext partners) and counted. A sentence longer than `max_seq_length - 3` tokens is split
into pieces (counted), or refused with file:line when `strict`."""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from bertforge.config.prepare import PrepareConfig
from bertforge.data import indexed
from bertforge.data.readers import Document, Piece, ReadStats, detect_format, documents, list_files, plan_pieces
from bertforge.data.sentences import split_sentences
from bertforge.data.tokenizer import load_tokenizer, tokenizer_hash
from bertforge.data.workers import WorkerDied, WorkerPool, note
from bertforge.errors import DataError
from bertforge.io import save_numpy, write_json
from bertforge.progress import NullProgress, Progress, progress

ENCODE_BATCH_CHARS = 1 << 20  # text handed to the tokenizer at once (bounds its per-sentence objects)


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
    tasks: int = 0
    """Tasks of this run's part (of `tasks_total` in the plan)."""
    tasks_total: int = 0
    part: str = "0/1"
    complete: bool = False
    """True when this run completed the dataset (meta.json written); False while other parts are missing."""
    main_cpu_s: float = 0.0
    """CPU seconds of the main process (planning, dispatch, manifest/meta); with workers = 1 it does everything."""
    workers_cpu_s: float = 0.0
    """CPU seconds the worker processes spent on tasks (0 with workers = 1)."""

    def add(self, other: dict) -> None:
        for k in ("documents", "sentences", "tokens", "text_bytes", "empty_documents_skipped",
                  "single_sentence_documents", "long_sentences_split", "shards_written", "shards_skipped"):
            setattr(self, k, getattr(self, k) + other[k])
        self.warnings += other["warnings"][: max(0, 10 - len(self.warnings))]


_COUNTED = ("documents", "sentences", "tokens", "text_bytes", "empty_documents_skipped", "single_sentence_documents",
            "long_sentences_split")


@dataclass(frozen=True)
class Task:
    index: int
    pieces: tuple[Piece, ...]
    size: int  # input bytes

    def describe(self) -> str:
        p = self.pieces[0]
        where = p.path if p.whole else f"{p.path} [{p.start}, {p.end if p.end >= 0 else 'end'})"
        return where + (f" and {len(self.pieces) - 1} more" if len(self.pieces) > 1 else "")


def shard_name(task: int, j: int) -> str:
    return f"shard_{task:06d}_{j:04d}"


# ---- the plan ------------------------------------------------------------------------------------------------------
def plan_tasks(files: list[Path], fmt: str | None, shard_bytes: int, text_column: str = "text") -> list[Task]:
    """Pieces of every file grouped, in order, into tasks of at most `shard_bytes` (a larger piece alone)."""
    tasks: list[Task] = []
    group: list[Piece] = []
    size = 0
    for path in files:
        for piece in plan_pieces(path, fmt or detect_format(path), shard_bytes, text_column):
            if group and size + piece.size > shard_bytes:
                tasks.append(Task(len(tasks), tuple(group), size))
                group, size = [], 0
            group.append(piece)
            size += piece.size
    if group:
        tasks.append(Task(len(tasks), tuple(group), size))
    return tasks


def part_of(tasks: list[Task], k: int, n: int) -> list[Task]:
    """Part k of n: the tasks whose byte midpoint falls in the k-th n-th of the input (contiguous, balanced)."""
    total = sum(t.size for t in tasks)
    if n == 1:
        return list(tasks)
    out, before = [], 0
    for t in tasks:
        mid2 = 2 * before + t.size  # twice the midpoint, in integers
        part = min(n - 1, mid2 * n // (2 * total)) if total else t.index * n // len(tasks)
        if part == k:
            out.append(t)
        before += t.size
    return out


def plan_hash(tasks: list[Task], settings: dict) -> str:
    ident = [settings] + [[[os.path.abspath(p.path), p.fmt, p.start, p.end, p.size] for p in t.pieces]
                          for t in tasks]
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


# ---- worker side --------------------------------------------------------------------------------------------------
_CTX: dict = {}


def _init_worker(tokenizer_path: str, settings: dict, in_pool: bool = False) -> None:
    if in_pool:  # one process per core already; the tokenizer's own thread pool would oversubscribe
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _CTX.clear()
    _CTX.update(settings, tokenizer=load_tokenizer(tokenizer_path))


def tokenize_documents(docs: list[Document], tok, max_sentence_tokens: int, strict: bool,
                       dtype: np.dtype = np.dtype(np.int64), lines: bool = False):
    """docs -> (tokens (n_tokens,) `dtype`, sentence_offsets (n_sent+1,), doc_offsets (n_docs+1,), doc_hashes, stats).
    lines: each non-empty line of a document is one sentence (format 'lines'), else sentences are segmented.
    Sentences go to the tokenizer in batches of about ENCODE_BATCH_CHARS characters; each batch's ids become one
    array of `dtype` at once (Python lists of ints would take ~36 bytes a token)."""
    stats = dict(documents=0, sentences=0, tokens=0, text_bytes=0, empty_documents_skipped=0,
                 single_sentence_documents=0, long_sentences_split=0, warnings=[])
    arrays: list[np.ndarray] = []
    sent_len: list[int] = []
    doc_off, hashes = [0], []

    def encode(batch: list[tuple[Document, list[str]]]) -> None:
        pieces: list[list[int]] = []
        flat = [s for _, sents in batch for s in sents]
        encoded = iter(tok.encode_batch(flat, add_special_tokens=False) if flat else [])
        for doc, sents in batch:
            stats["text_bytes"] += len(doc.text.encode("utf-8"))
            n_before = len(sent_len)
            for _ in sents:
                ids = next(encoded).ids
                if not ids:
                    continue
                if len(ids) > max_sentence_tokens:
                    if strict:
                        raise DataError(f"sentence of {len(ids)} tokens is longer than max length "
                                        f"({max_sentence_tokens} + 3 special tokens)", doc.source, doc.line)
                    stats["long_sentences_split"] += 1
                    if len(stats["warnings"]) < 10:
                        stats["warnings"].append(f"{doc.source}:{doc.line}: sentence of {len(ids)} tokens split "
                                                 f"into pieces of at most {max_sentence_tokens}")
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
        arrays.append(np.fromiter(itertools.chain.from_iterable(pieces), dtype=dtype,
                                  count=sum(len(p) for p in pieces)))

    batch, chars = [], 0
    for doc in docs:
        batch.append((doc, split_sentences(doc.text, lines=lines)))
        chars += len(doc.text)
        if chars >= ENCODE_BATCH_CHARS:
            encode(batch)
            batch, chars = [], 0
    encode(batch)
    tokens = np.concatenate(arrays)
    sentence_offsets = np.concatenate([[0], np.cumsum(sent_len, dtype=np.int64)])
    stats["sentences"], stats["tokens"] = len(sent_len), int(tokens.size)
    return tokens, sentence_offsets, np.asarray(doc_off, np.int64), np.asarray(hashes, np.uint64), stats


def _source_hash(docs: list[Document]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(d.text.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def _shard_docs(docs: Iterator[Document], shard_bytes: int) -> Iterator[list[Document]]:
    """Consecutive documents cut into lists whose text reaches `shard_bytes` (the last one may be shorter)."""
    chunk, size = [], 0
    for d in docs:
        chunk.append(d)
        size += len(d.text.encode("utf-8"))
        if size >= shard_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _kept(prefix: Path, header: dict) -> dict | None:
    """The header of a complete, valid shard made from the same text with the same settings, else None."""
    if not prefix.with_suffix(".idx").exists():
        return None
    try:
        old = indexed.check_shard(prefix)
    except DataError:
        return None
    same = all(old.get(k) == header.get(k) for k in ("source_hash", "tokenizer_hash", "max_sentence_tokens",
                                                     "sentence_per_line"))
    return old if same else None


def _run_task(task: Task) -> dict:
    """Read, tokenize and write the shards of one task (in a worker, or in the main process with workers=1)."""
    cpu = time.process_time()
    c = _CTX
    out, vocab_size = Path(c["out"]), c["vocab_size"]
    for tmp in out.glob(f".shard_{task.index:06d}_*.tmp-*"):  # left by a killed run of this task
        tmp.unlink(missing_ok=True)
    read = ReadStats()
    res = dict({k: 0 for k in _COUNTED}, shards_written=0, shards_skipped=0, warnings=[], shards=[],
               counts=np.zeros(vocab_size, np.int64))
    docs = (d for piece in task.pieces for d in documents(piece, read, c["text_column"]))
    note(shard_name(task.index, 0))  # what this worker reads now (named if it dies)
    for j, shard_docs in enumerate(_shard_docs(docs, c["shard_bytes"])):
        name = shard_name(task.index, j)
        prefix = out / name
        header = dict(c["header"], source_hash=_source_hash(shard_docs))
        old = _kept(prefix, header)
        if old is not None:
            stats = _old_stats(old)
            tokens = np.fromfile(prefix.with_suffix(".bin"), dtype=old["dtype"])
            res["shards_skipped"] += 1
        else:
            dtype = indexed.token_dtype(vocab_size)  # np.fromiter refuses an id that does not fit
            tokens, so, do, dh, stats = tokenize_documents(shard_docs, c["tokenizer"], c["max_sentence_tokens"],
                                                           c["strict"], dtype, c["lines"])
            if stats["documents"] == 0:  # nothing tokenizable: no shard
                res["empty_documents_skipped"] += stats["empty_documents_skipped"]
                continue
            if tokens.size and int(tokens.max()) >= vocab_size:
                raise DataError("token id outside the vocabulary", str(prefix))
            header["stats"] = {k: stats[k] for k in ("text_bytes", "single_sentence_documents",
                                                     "long_sentences_split", "empty_documents_skipped")}
            indexed.write_shard(prefix, tokens, so, do, dh, header)
            res["shards_written"] += 1
        res["counts"] += np.bincount(tokens, minlength=vocab_size)[:vocab_size]
        for k in _COUNTED:
            res[k] += stats[k]
        res["warnings"] += stats["warnings"][: max(0, 10 - len(res["warnings"]))]
        res["shards"].append([name, header["source_hash"], stats["tokens"], stats["sentences"], stats["documents"]])
        note(shard_name(task.index, j + 1))
    res["empty_documents_skipped"] += read.empty_skipped
    res["cpu_s"] = time.process_time() - cpu
    return res


def _old_stats(header: dict) -> dict:
    s = header.get("stats", {})
    return dict(documents=header["n_docs"], sentences=header["n_sentences"], tokens=header["n_tokens"],
                text_bytes=s.get("text_bytes", 0), empty_documents_skipped=s.get("empty_documents_skipped", 0),
                single_sentence_documents=s.get("single_sentence_documents", 0),
                long_sentences_split=s.get("long_sentences_split", 0), warnings=[])


# ---- main side ----------------------------------------------------------------------------------------------------
def _clean_tmp(out: Path) -> None:
    for folder in (out, out / indexed.PARTS):
        for p in folder.glob(".*.tmp-*"):
            p.unlink(missing_ok=True)


def prepare(inputs: Iterable[str | Path], tokenizer: str | Path, out_dir: str | Path,
            config: PrepareConfig | None = None, **settings) -> PrepareStats:
    """Tokenize `inputs` (files/folders) with the tokenizer at `tokenizer` into an indexed dataset at `out_dir`.

    `config` (or its fields as keywords: workers, shard_bytes, max_seq_length, strict, part, format, text_column,
    progress) says how. Returns this run's counts; `complete` tells whether the dataset is whole (the last part).
    Raises DataError (one line, naming the file and line) on bad input or a worker that died; ConfigError on bad
    settings."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    cfg = config if config is not None else PrepareConfig(**settings)
    inputs, out = list(inputs), Path(out_dir)
    tok = load_tokenizer(tokenizer)
    thash, vocab_size = tokenizer_hash(tok), tok.get_vocab_size()
    meta_path = out / indexed.META
    old_meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    if old_meta and old_meta.get("tokenizer_hash") != thash:
        raise DataError(f"folder holds a dataset prepared with another tokenizer (hash "
                        f"{old_meta.get('tokenizer_hash')}, this tokenizer is {thash}); use a new output folder",
                        str(out))
    files = list_files(inputs)
    tasks = plan_tasks(files, cfg.format or None, cfg.shard_bytes, cfg.text_column)
    max_sentence_tokens = cfg.max_seq_length - 3
    plan = plan_hash(tasks, dict(shard_bytes=cfg.shard_bytes, text_column=cfg.text_column, tokenizer=thash,
                                 max_sentence_tokens=max_sentence_tokens))
    k, n = cfg.part_index
    mine = part_of(tasks, k, n)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    if n == 1:
        _clean_tmp(out)  # with several parts, each task cleans its own (other nodes may be writing)
    if old_meta and old_meta.get("plan_hash") != plan:
        meta_path.unlink(missing_ok=True)  # the dataset is about to change: no longer complete
    header = {"tokenizer_hash": thash, "vocab_size": vocab_size, "format_version": indexed.FORMAT_VERSION,
              "max_sentence_tokens": max_sentence_tokens}
    if cfg.format == "lines":  # recorded only then, so datasets of the other formats keep their bytes
        header["sentence_per_line"] = True
    context = dict(out=str(out), vocab_size=vocab_size, header=header, max_sentence_tokens=max_sentence_tokens,
                   strict=cfg.strict, shard_bytes=cfg.shard_bytes, text_column=cfg.text_column,
                   lines=cfg.format == "lines")
    stats = PrepareStats(files=len(files), tasks=len(mine), tasks_total=len(tasks), part=f"{k}/{n}")
    bar = progress(sum(t.size for t in mine), "prepare" if n == 1 else f"prepare {k}/{n}", unit="B",
                   unit_scale=True, bar=cfg.progress)
    workers = min(cfg.workers, len(mine))
    try:
        results, counts = _execute(mine, workers, str(tokenizer), context, vocab_size, bar)
    except WorkerDied as exc:
        task = next(t for t in mine if t.index == exc.task)
        shard = out / (exc.note or shard_name(task.index, 0))
        raise DataError(f"worker process {exc.pid} {exc.how} while preparing this shard from {task.describe()} (out "
                        f"of memory? try fewer --workers or a smaller --shard-bytes); the shards finished are kept: "
                        f"run the same command again to resume", str(shard)) from None
    except BaseException:
        if n == 1:
            _clean_tmp(out)
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    finally:
        bar.close()
    shards = []
    for index in sorted(results):  # task order: deterministic warnings and shard list
        res = results[index]
        stats.add(res)
        stats.workers_cpu_s += res["cpu_s"] if workers > 1 else 0.0
        shards += res["shards"]
    if n == 1 and stats.documents == 0:
        if created and not any(out.iterdir()):
            out.rmdir()
        raise DataError("no documents with text in the input", ", ".join(map(str, inputs)))
    name = f"part-{k:05d}-of-{n:05d}"
    save_numpy(out / indexed.PARTS / f"{name}.unigram.npy", counts)
    manifest = dict(plan_hash=plan, tokenizer_hash=thash, vocab_size=vocab_size, shards=shards,
                    stats={f: getattr(stats, f) for f in (*_COUNTED, "files", "shards_written", "shards_skipped")},
                    warnings=stats.warnings)
    write_json(out / indexed.PARTS / f"{name}.json", manifest)
    stats.seconds = time.perf_counter() - t0
    timings = dict(seconds=stats.seconds, workers_cpu_s=stats.workers_cpu_s) if n == 1 else {}
    stats.complete = _finalize(out, n, plan, header, timings)
    stats.main_cpu_s = time.process_time() - cpu0
    return stats


def _execute(mine: list[Task], workers: int, tokenizer: str, context: dict, vocab_size: int,
             bar: Progress | NullProgress) -> tuple[dict[int, dict], np.ndarray]:
    """Run the tasks (in this process when workers <= 1, else in a WorkerPool) -> ({task: result}, unigram counts
    summed as results come, not kept per task)."""
    results: dict[int, dict] = {}
    counts = np.zeros(vocab_size, np.int64)
    size = {t.index: t.size for t in mine}
    shards = 0  # written so far, shown beside the bytes

    def done(index: int, res: dict) -> None:
        nonlocal shards
        np.add(counts, res.pop("counts"), out=counts)
        results[index] = res
        shards += len(res["shards"])
        bar.update(size[index], shards=shards)

    if workers <= 1:
        _init_worker(tokenizer, context)
        for t in mine:
            done(t.index, _run_task(t))
    else:
        with WorkerPool(workers, _run_task, _init_worker, (tokenizer, context, True)) as pool:
            for key, res in pool.run((t.index, t) for t in mine):
                done(key, res)
    return results, counts


def _finalize(out: Path, n: int, plan: str, header: dict, timings: dict) -> bool:
    """Write unigram.npy and meta.json (with `timings` among its stats) when all n parts are done (True), else
    leave the dataset incomplete. Raises DataError when a part comes from another plan or nothing has text."""
    parts_dir = out / indexed.PARTS
    names = [parts_dir / f"part-{k:05d}-of-{n:05d}.json" for k in range(n)]
    if not all(p.exists() for p in names):
        return False
    manifests = [json.loads(p.read_text()) for p in names]
    for p, m in zip(names, manifests):
        if m["plan_hash"] != plan:
            raise DataError(f"this part was prepared from other inputs or settings (plan {m['plan_hash']}, this run's "
                            f"is {plan}); prepare every part with the same inputs and flags", str(p))
    shards = [s for m in manifests for s in m["shards"]]
    totals = {k: sum(m["stats"][k] for m in manifests) for k in manifests[0]["stats"]}
    totals["files"] = manifests[0]["stats"]["files"]
    if totals["documents"] == 0:
        raise DataError("no documents with text in the input", str(out))
    keep = {s[0] for s in shards}
    for stale in sorted(out.glob("shard_*.idx")) + sorted(out.glob("shard_*.bin")):  # an earlier, different plan
        if stale.stem not in keep:
            stale.unlink(missing_ok=True)
    for other in parts_dir.glob("part-*"):
        if f"-of-{n:05d}." not in other.name:
            other.unlink(missing_ok=True)
    counts = sum(np.load(parts_dir / f"part-{k:05d}-of-{n:05d}.unigram.npy") for k in range(n))
    save_numpy(out / "unigram.npy", counts)
    warnings = [w for m in manifests for w in m["warnings"]][:10]
    dataset_id = hashlib.sha256(json.dumps([header["tokenizer_hash"], shards]).encode()).hexdigest()[:16]
    meta = dict(header, shards=[s[0] for s in shards], n_docs=totals["documents"], n_sentences=totals["sentences"],
                n_tokens=totals["tokens"], dataset_id=dataset_id, plan_hash=plan, parts=n,
                stats=dict(totals, warnings=len(warnings), **timings))
    meta.pop("max_sentence_tokens")
    meta["max_seq_length"] = header["max_sentence_tokens"] + 3
    write_json(out / indexed.META, meta)
    return True
