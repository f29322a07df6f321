"""Sequence-classification data: CSV / TSV / JSONL readers, a duplicate-aware seeded split, and encoding to
[CLS] A [SEP] (B [SEP]) token ids truncated to the first `max_len` tokens (longest-first for pairs).

Every problem is a UserError naming file and line: bytes that are not valid in the declared encoding, an empty
file, a missing column, an empty text or label, a dev/test label never seen in training."""
from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer

from engine.cli import UserError

FORMATS = ("csv", "tsv", "jsonl")


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
        raise UserError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a file") from None
    try:
        text = raw.decode(encoding)
    except LookupError:
        raise UserError(f"unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: byte 0x{raw[exc.start]:02x} is not valid {encoding} "
                        f"(pass --encoding, e.g. latin-1, if the file uses another encoding)") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise UserError(f"{path}: file is empty")
    return text


def _lines(text: str) -> list[str]:
    """Lines split on \n only (str.splitlines also splits on U+2028, U+0085, ... which JSON strings may hold)."""
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def detect_format(path: str | Path, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in ("csv", "tsv", "jsonl"):
        return suffix
    if suffix in ("json", "ndjson"):
        return "jsonl"
    if suffix == "txt":
        return "tsv"
    raise UserError(f"{path}: cannot tell the format from the suffix; pass --format csv|tsv|jsonl")


def jsonl_objects(path: Path, text: str):
    """Yield (line number, dict) for each non-blank line of JSONL text; bad JSON or a non-object is a UserError
    naming file and line."""
    for lineno, line in enumerate(_lines(text), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object per line")
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
                raise UserError(f"{path}:{start}: {len(row)} fields but the header has {len(header)}")
            yield start, dict(zip(header, row))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise UserError(f"{path}:{reader.line_num}: malformed {fmt.upper()} ({exc})") from None


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
                raise UserError(f"{path}:{lineno}: no column {col!r} in the {where} (columns: {have})")
        values = {}
        for col in wanted:
            value = rec[col]
            value = "" if value is None else str(value).strip()
            if not value:
                raise UserError(f"{path}:{lineno}: empty {col!r}")
            values[col] = value
        out.append(Example(values[text_column], values.get(text_b_column) if text_b_column else None,
                           values.get(label_column) if label_column else None, str(path), lineno))
    if not out:
        raise UserError(f"{path}: no examples (only a header?)")
    return out


def label_vocab(train: Sequence[Example]) -> list[str]:
    """Sorted distinct training labels: the class order of the head and of every report."""
    return sorted({e.label for e in train})


def check_labels(examples: Sequence[Example], labels: Sequence[str], split: str) -> None:
    known = set(labels)
    for e in examples:
        if e.label not in known:
            raise UserError(f"{e.source}:{e.line}: {split} label {e.label!r} does not occur in the training data "
                            f"(training labels: {', '.join(labels)})")


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
        raise UserError(f"split sizes {list(sizes)} ask for {sum(targets)} examples but there are {n}")
    parts: list[list[Example]] = [[] for _ in sizes]
    k = 0
    for part, target in zip(parts, targets):
        while k < len(keys) and len(part) < target:
            part.extend(groups[keys[k]])
            k += 1
    return parts


def encode(tok: Tokenizer, examples: Sequence[Example], max_len: int, label2id: dict[str, int] | None = None
           ) -> list[dict]:
    """Token ids of [CLS] A [SEP] (B [SEP]), at most max_len (longest-first truncation of a pair)."""
    if max_len < 4:
        raise UserError(f"max_len must be >= 4, got {max_len}")
    tok.enable_truncation(max_length=max_len, strategy="longest_first")
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
