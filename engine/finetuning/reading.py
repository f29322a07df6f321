"""Text files read as a stream of numbered lines, for the finetuning readers (training files, and `predict` /
`evaluate` inputs of any size: memory stays flat because nothing holds the whole file).

Lines are split on b"\\n" only (str.splitlines would also split on U+2028, U+0085, ... which JSON strings and CSV
cells may hold) and decoded one by one, so a byte that is not valid in the declared encoding is reported with its
line. Encodings in which "\\n" is not the byte 0x0a (UTF-16, UTF-32) are decoded whole instead (not streamed). A
UTF-8 byte-order mark at the start is dropped. `bytes_read` follows the position for progress reports."""
from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Iterator

from bertforge.errors import ConfigError, DataError


def check_encoding(encoding: str) -> bool:
    """True when lines can be split on the byte 0x0a before decoding; ConfigError for an unknown encoding."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(f"--encoding: unknown encoding {encoding!r}") from None
    return "\n".encode(encoding) == b"\n" and "a".encode(encoding) == b"a"


class LineReader:
    """Iterate `(line number, text)` over a file, 1-based, each text with its line ending ("\\n" / "\\r\\n", none on
    a last line without one). DataError naming file and line for a missing file or undecodable bytes."""

    def __init__(self, path: str | Path, encoding: str = "utf-8"):
        self.path, self.encoding = Path(path), encoding
        self.streamed = check_encoding(encoding)
        self.bytes_read = 0
        self.blank = True  # no non-whitespace character seen so far
        try:
            self.size = self.path.stat().st_size
        except FileNotFoundError:
            raise DataError("file not found", str(self.path)) from None
        except OSError as exc:  # a symbolic link loop, a name too long, ...
            raise DataError(f"cannot read it: {exc.strerror}", str(self.path)) from None
        if self.path.is_dir():
            raise DataError("is a directory, expected a file", str(self.path))

    def __iter__(self) -> Iterator[tuple[int, str]]:
        try:
            fh = open(self.path, "rb")
        except OSError as exc:  # no permission, ...
            raise DataError(f"cannot read it: {exc.strerror}", str(self.path)) from None
        with fh:
            raws = iter(fh) if self.streamed else iter([fh.read()])
            lineno = 0
            for raw in raws:
                self.bytes_read += len(raw)
                if not self.streamed:
                    yield from self._whole(raw)
                    return
                lineno += 1
                try:
                    text = raw.decode(self.encoding)
                except UnicodeDecodeError as exc:
                    raise DataError(f"byte 0x{raw[exc.start]:02x} is not valid {self.encoding} (pass --encoding, "
                                    f"e.g. latin-1, if the file uses another encoding)", str(self.path),
                                    lineno) from None
                if lineno == 1 and text.startswith("\ufeff"):
                    text = text[1:]
                if self.blank and text.strip():
                    self.blank = False
                yield lineno, text

    def _whole(self, raw: bytes) -> Iterator[tuple[int, str]]:
        try:
            text = raw.decode(self.encoding)
        except UnicodeDecodeError as exc:
            raise DataError(f"bytes at offset {exc.start} are not valid {self.encoding}", str(self.path)) from None
        if text.startswith("\ufeff"):
            text = text[1:]
        for lineno, line in enumerate(text.split("\n"), 1):
            if self.blank and line.strip():
                self.blank = False
            if line:
                yield lineno, line + "\n"

    def empty_error(self) -> DataError:
        return DataError("file is empty", str(self.path))


def strip_ending(text: str) -> str:
    """The line without its "\\n" or "\\r\\n"."""
    if text.endswith("\n"):
        text = text[:-1]
    return text[:-1] if text.endswith("\r") else text


def jsonl_objects(lines: LineReader) -> Iterator[tuple[int, dict]]:
    """Yield (line number, dict) for each non-blank line of a JSONL file; bad JSON or a non-object is a DataError
    naming file and line, a file with no non-blank line is 'file is empty'."""
    for lineno, line in lines:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON ({exc.msg})", str(lines.path), lineno) from None
        if not isinstance(obj, dict):
            raise DataError("expected a JSON object per line", str(lines.path), lineno)
        yield lineno, obj
    if lines.blank:
        raise lines.empty_error()
