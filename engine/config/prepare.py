"""`PrepareConfig`: the settings of `bertforge prepare` (raw corpora -> sharded indexed dataset), typed, with a
docstring under every field and the checks in `__post_init__`. Inputs, tokenizer and output folder are the
command's positional/required arguments, not settings."""
from __future__ import annotations

import re
from dataclasses import dataclass

from bertforge.config.checks import check_positive_int, flag, invalid_choice
from bertforge.errors import ConfigError

FORMATS = ("", "json", "jsonl", "txt", "txt-file", "lines", "rst", "parquet", "arrow")
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes from an integer or `<n>[K|M|G|T]` (powers of 1024, e.g. 64M). Raises ConfigError otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise ConfigError(f"{flag('shard_bytes')} takes a byte count such as 67108864 or 64M, got {text!r}")
    return int(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower())


def parse_part(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N) with 0 <= K < N. Raises ConfigError otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise ConfigError(f"--part must be K/N with parts numbered 0 .. N-1 (e.g. 0/4 on the first of 4 nodes), "
                          f"got {text!r}")
    return int(m.group(1)), int(m.group(2))


@dataclass
class PrepareConfig:
    format: str = ""
    """Reader for every input: json, jsonl, txt (blank-line separated documents), txt-file (one document per file),
    lines (BERT's format: one sentence per line, a blank line between documents; for text without sentence
    punctuation), rst, parquet, arrow; "" = by file suffix."""
    text_column: str = "text"
    """Column (Parquet / Arrow) or key (JSONL) that holds a document's text."""
    workers: int = 1
    """Worker processes that read, split and tokenize; 1 = everything in this process."""
    shard_bytes: int = 16 * 1024 ** 2
    """Input text per shard, in bytes (also the unit of work of one worker and the cut size of large .jsonl/.txt/
    Parquet files): a shard is closed once its documents reach it, so book-length documents cannot make giant
    shards. Flag takes 64M, 1G, ...."""
    max_seq_length: int = 512
    """Longest training sample in tokens; a sentence longer than max_seq_length - 3 is split into pieces (or
    refused with strict)."""
    strict: bool = False
    """Refuse (with file:line) a sentence longer than max_seq_length - 3 tokens instead of splitting it."""
    part: str = "0/1"
    """Prepare only part K of N of the input (K = 0 .. N-1), for N nodes writing into one shared output folder;
    the dataset is complete (meta.json written) when the last part finishes."""
    progress: bool = True
    """A progress bar on rank 0 when stderr is a terminal, else (a log file) a plain progress line every 30 s;
    --no-progress: the plain lines on a terminal too."""

    def __post_init__(self) -> None:
        self.shard_bytes = parse_size(self.shard_bytes)
        check_positive_int(self, "workers", "shard_bytes")
        if self.format not in FORMATS:
            raise ConfigError(invalid_choice("--format", self.format, [f for f in FORMATS if f]))
        if not isinstance(self.max_seq_length, int) or self.max_seq_length < 5:
            raise ConfigError(f"{flag('max_seq_length')} must be at least 5 ([CLS] A [SEP] B [SEP]), got "
                              f"{self.max_seq_length!r}")
        if not self.text_column:
            raise ConfigError("--text-column must name a column or key")
        parse_part(self.part)

    @property
    def part_index(self) -> tuple[int, int]:
        """(K, N) of `part`."""
        return parse_part(self.part)
