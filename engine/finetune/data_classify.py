"""Sequence-classification data: CSV / TSV / JSONL readers, a duplicate-aware seeded split, and encoding to
[CLS] A [SEP] (B [SEP]) token ids truncated to the first `max_seq_length` tokens (longest-first for pairs).

Every problem with a file is a DataError naming file and line: bytes that are not valid in the declared encoding,
an empty file, a missing column, an empty text or label, a dev/test label never seen in training."""
from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer

from engine.config.finetune import CLASSIFY_FORMATS
from engine.errors import ConfigError, DataError

@dataclass
class Example:
    text: str
    text_b: str | None
    label: str | None
    source: str
    line: int
    """1-based line where the record starts (the header is line 1 of a CSV)."""


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """The whole file decoded; undecodable bytes and empty files are one-line errors naming the line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", str(path)) from None
    except IsADirectoryError:
        raise DataError("is a directory, expected a file", str(path)) from None
    try:
        text = raw.decode(encoding)
    except LookupError:
        raise ConfigError(f"--encoding: unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"byte 0x{raw[exc.start]:02x} is not valid {encoding} (pass --encoding, e.g. latin-1, "
                        f"if the file uses another encoding)", str(path), line) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise DataError("file is empty", str(path))
    return text


def _lines(text: str) -> list[str]:
    """Lines split on \n only (str.splitlines also splits on U+2028, U+0085, ... which JSON strings may hold)."""
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def detect_format(path: str | Path, fmt: str | None = None) -> str:
    """`fmt`, or the format of the file suffix (.json / .ndjson are JSONL, .txt is TSV)."""
    if fmt:
        if fmt not in CLASSIFY_FORMATS:
            raise ConfigError(f"--format: unknown format {fmt!r}; choose one of {', '.join(CLASSIFY_FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in ("csv", "tsv", "jsonl"):
        return suffix
    if suffix in ("json", "ndjson"):
        return "jsonl"
    if suffix == "txt":
        return "tsv"
    raise DataError("cannot tell the format from the suffix; pass --format csv|tsv|jsonl", str(path))


def jsonl_objects(path: Path, text: str):
    """Yield (line number, dict) for each non-blank line of JSONL text; bad JSON or a non-object is a DataError
    naming file and line."""
    for lineno, line in enumerate(_lines(text), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON ({exc.msg})", str(path), lineno) from None
        if not isinstance(obj, dict):
            raise DataError("expected a JSON object per line", str(path), lineno)
        yield lineno, obj


def _records(path: Path, text: str, fmt: str):
    """Yield (line, dict) records; CSV/TSV check the header, JSONL each line's JSON."""
    if fmt == "jsonl":
        yield from jsonl_objects(path, text)
        return
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="," if fmt == "csv" else "\t")
    try:
        header = next(reader)
        header = [h.strip() for h in header]
        start = reader.line_num + 1
        for row in reader:
            if not any(cell.strip() for cell in row):
                start = reader.line_num + 1
                continue
            if len(row) != len(header):
                raise DataError(f"{len(row)} fields but the header has {len(header)}", str(path), start)
            yield start, dict(zip(header, row))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"malformed {fmt.upper()} ({exc})", str(path), reader.line_num) from None


def read_examples(path: str | Path, text_column: str = "text", text_b_column: str | None = None,
                  label_column: str | None = "label", encoding: str = "utf-8", fmt: str | None = None
                  ) -> list[Example]:
    """Read labelled (label_column given) or unlabelled examples from a CSV / TSV / JSONL file."""
    path = Path(path)
    fmt = detect_format(path, fmt)
    text = read_text(path, encoding)
    wanted = [c for c in (text_column, text_b_column, label_column) if c]
    out: list[Example] = []
    for lineno, rec in _records(path, text, fmt):
        for col in wanted:
            if col not in rec:
                have = ", ".join(map(str, rec)) or "none"
                where = "header" if fmt != "jsonl" else "record"
                raise DataError(f"no column {col!r} in the {where} (columns: {have})", str(path), lineno)
        values = {}
        for col in wanted:
            value = rec[col]
            value = "" if value is None else str(value).strip()
            if not value:
                raise DataError(f"empty {col!r}", str(path), lineno)
            values[col] = value
        out.append(Example(values[text_column], values.get(text_b_column) if text_b_column else None,
                           values.get(label_column) if label_column else None, str(path), lineno))
    if not out:
        raise DataError("no examples (only a header?)", str(path))
    return out


def label_vocab(train: Sequence[Example]) -> list[str]:
    """Sorted distinct training labels: the class order of the head and of every report."""
    return sorted({e.label for e in train})


def check_labels(examples: Sequence[Example], labels: Sequence[str], split: str) -> None:
    """DataError at the first example whose label is not in `labels` (`split` names the part in the message)."""
    known = set(labels)
    for e in examples:
        if e.label not in known:
            raise DataError(f"{split} label {e.label!r} does not occur in the training data (training labels: "
                            f"{', '.join(labels)})", e.source, e.line)


def split_examples(examples: Sequence[Example], sizes: Sequence[float], seed: int) -> list[list[Example]]:
    """Deterministic split into len(sizes) parts (e.g. train/dev/test). Sizes are all fractions (<= 1, of the whole)
    or all counts; counts may sum to less than the data (a fixed subset). Examples with the same text (case and
    surrounding space ignored) always land in the same part, so no text is in two splits."""
    groups: dict[str, list[Example]] = {}
    for e in examples:
        groups.setdefault(" ".join(f"{e.text} {e.text_b or ''}".lower().split()), []).append(e)
    keys = list(groups)
    random.Random(seed).shuffle(keys)
    n = len(examples)
    targets = [round(s * n) if all(x <= 1 for x in sizes) else int(s) for s in sizes]
    if sum(targets) > n:
        raise ConfigError(f"--split: sizes {list(sizes)} ask for {sum(targets)} examples but there are {n}")
    parts: list[list[Example]] = [[] for _ in sizes]
    k = 0
    for part, target in zip(parts, targets):
        while k < len(keys) and len(part) < target:
            part.extend(groups[keys[k]])
            k += 1
    return parts


def encode(tok: Tokenizer, examples: Sequence[Example], max_seq_length: int,
           label2id: dict[str, int] | None = None) -> list[dict]:
    """{'input_ids', 'token_type_ids'[, 'labels']} of [CLS] A [SEP] (B [SEP]) per example, at most max_seq_length
    tokens (longest-first truncation of a pair)."""
    if max_seq_length < 4:
        raise ConfigError(f"--max-seq-length must be at least 4, got {max_seq_length}")
    tok.enable_truncation(max_length=max_seq_length, strategy="longest_first")
    try:
        if any(e.text_b is not None for e in examples):
            encs = tok.encode_batch([(e.text, e.text_b or "") for e in examples])
        else:
            encs = tok.encode_batch([e.text for e in examples])
    finally:
        tok.no_truncation()
    out = []
    for e, enc in zip(examples, encs):
        feat = {"input_ids": enc.ids, "token_type_ids": enc.type_ids}
        if label2id is not None and e.label is not None:
            feat["labels"] = label2id[e.label]
        out.append(feat)
    return out
