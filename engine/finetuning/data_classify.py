"""Sequence-classification data: CSV / TSV / JSONL / Parquet / Arrow readers (a Hugging Face `datasets`
save_to_disk split folder too; a ClassLabel column gives its names) (streamed: `iter_examples`), the folder-per-class layout
(`read_folder`: DIR/<label>/*.txt, one example per file, as scikit-learn's load_files and torchvision's ImageFolder
lay it out), a label-stratified,
duplicate-aware seeded split, and encoding to [CLS] A [SEP] (B [SEP]) token ids truncated to the first
`max_seq_length` tokens (longest-first for pairs).

Every problem with a file is a DataError naming file and line: bytes that are not valid in the declared encoding,
an empty file, a missing column, an empty text or label. A dev / test label that training lacks is no error: the
label list comes from every part (the head has an output for it), it is reported, and its examples count as misses.
"""
from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from tokenizers import Tokenizer

from bertforge.config.checks import invalid_choice
from bertforge.config.finetune import CLASSIFY_FORMATS
from bertforge.data.hf_datasets import class_names, columnar_records, saved_dataset_files
from bertforge.errors import ConfigError, DataError
from bertforge.finetuning.reading import LineReader, jsonl_objects
from bertforge.finetuning.splitting import split_counts


COLUMNAR = ("parquet", "arrow")  # row numbers stand for lines


@dataclass
class Example:
    text: str
    text_b: str | None
    label: str | None
    source: str
    line: int
    """1-based line where the record starts (the header is line 1 of a CSV)."""


def detect_format(path: str | Path, fmt: str | None = None, folders: bool = False) -> str:
    """`fmt`, or the format of the file suffix (.csv, .tsv, .jsonl; .json / .ndjson are JSONL). Any other suffix
    (.txt included: tab-separated or one text per line?) is a DataError naming the file and the formats (and the
    folder layout, where the caller reads folders: `folders`)."""
    if fmt:
        if fmt not in CLASSIFY_FORMATS:
            raise ConfigError(invalid_choice("--format", fmt, CLASSIFY_FORMATS))
        return fmt
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in ("csv", "tsv", "jsonl", "parquet", "arrow"):
        return suffix
    if suffix in ("json", "ndjson"):
        return "jsonl"
    folder = ", or a folder DIR/<label>/*.txt of one example per file" if folders else ""
    raise DataError(f"cannot tell the format from the suffix {Path(path).suffix or '(none)'!r}: pass --format "
                    f"csv|tsv|jsonl|parquet|arrow{folder}", str(path))


def read_folder(folder: str | Path, encoding: str = "utf-8") -> list[Example]:
    """Examples of the folder-per-class layout: every sub-folder of `folder` is a label (its name; sub-folders in
    sorted order), every `*.txt` file in it one example (whitespace collapsed; line 1 is the file's start). Files
    directly in `folder` and hidden entries are ignored. DataError naming the path for a label folder without .txt
    files, another file in a label folder, an empty or undecodable file, or no label folder at all."""
    folder = Path(folder)
    labels = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not labels:
        raise DataError("a folder of examples needs one sub-folder per label, each holding .txt files (one example "
                        "per file)", str(folder))
    out: list[Example] = []
    for label_dir in labels:
        files = sorted(p for p in label_dir.iterdir() if not p.name.startswith("."))
        other = [p for p in files if not (p.is_file() and p.suffix.lower() == ".txt")]
        if other:
            raise DataError(f"label folder {label_dir.name!r} holds {other[0].name!r}; it may hold only .txt files, "
                            f"one example each", str(other[0]))
        if not files:
            raise DataError(f"label folder {label_dir.name!r} holds no .txt files", str(label_dir))
        for path in files:
            try:
                text = " ".join(path.read_bytes().decode(encoding).lstrip("\ufeff").split())
            except UnicodeDecodeError as exc:
                raise DataError(f"byte at offset {exc.start} is not valid {encoding} (pass --encoding, e.g. latin-1)",
                                str(path)) from None
            if not text:
                raise DataError("empty example file", str(path), 1)
            out.append(Example(text, None, label_dir.name, str(path), 1))
    return out


def _records(lines: LineReader, fmt: str, wanted: Sequence[str] = ()) -> Iterator[tuple[int, dict]]:
    """Yield (line, dict) records; CSV/TSV check the header (the first non-blank line: a `wanted` column missing
    from it is named at its line), JSONL each line's JSON."""
    path = lines.path
    if fmt == "jsonl":
        yield from jsonl_objects(lines)
        return
    numbered = iter(lines)
    first = 0

    def texts():
        nonlocal first
        for lineno, text in numbered:
            if not first:
                if not text.strip():
                    continue  # blank lines before the header
                first = lineno
            yield text

    # strict: a quote closed in the middle of a cell (e.g. by the next record's opening quote after an
    # unterminated one) is an error instead of silently merging records
    reader = csv.reader(texts(), delimiter="," if fmt == "csv" else "\t", strict=True)
    start = 1
    try:
        header = next(reader, None)
        if header is None:
            raise lines.empty_error()
        header = [h.strip() for h in header]
        start = first
        missing = [c for c in wanted if c not in header]
        if missing:
            raise DataError(f"no column {missing[0]!r} in the header (columns: {', '.join(header) or 'none'})",
                            str(path), first)
        start = first + reader.line_num
        for row in reader:
            if not any(cell.strip() for cell in row):
                start = first + reader.line_num
                continue
            if len(row) != len(header):
                raise DataError(f"{len(row)} fields but the header has {len(header)}", str(path), start)
            yield start, dict(zip(header, row))
            start = first + reader.line_num
    except csv.Error as exc:
        raise DataError(f"malformed {fmt.upper()} in the record that starts here ({exc}; an unterminated or stray "
                        f"quote? quote a cell whole and double the quotes inside it)", str(path), start) from None


def iter_examples(path: str | Path, text_column: str = "text", text_b_column: str | None = None,
                  label_column: str | None = "label", encoding: str = "utf-8", fmt: str | None = None,
                  lines: LineReader | None = None, label_names: Sequence[str] | None = None) -> Iterator[Example]:
    """Labelled (label_column given) or unlabelled examples of a CSV / TSV / JSONL file, one at a time (the file is
    never held whole). `lines`: a LineReader of `path` to read through (its bytes_read follows the position).
    `label_names`: the names of integer label ids (`"label": 2` -> label_names[2]; a label that is not an id of
    them is a DataError); None: labels are names (a Parquet / Arrow ClassLabel column: its own names)."""
    path = Path(path)
    fmt = detect_format(path, fmt)
    names = class_names(path, label_column) if label_column and fmt in COLUMNAR and label_names is None else None
    wanted = [c for c in (text_column, text_b_column, label_column) if c]
    records = (columnar_records(path) if fmt in COLUMNAR
               else _records(lines or LineReader(path, encoding), fmt, wanted))
    for lineno, rec in records:
        if names is not None and isinstance(rec.get(label_column), int) and 0 <= rec[label_column] < len(names):
            rec[label_column] = names[rec[label_column]]  # a ClassLabel column: its name, as in dataset_info.json
        for col in wanted:
            if col not in rec:
                have = ", ".join(map(str, rec)) or "none"
                where = "header" if fmt != "jsonl" else "record"
                raise DataError(f"no column {col!r} in the {where} (columns: {have})", str(path), lineno)
        if label_names is not None and label_column:
            rec[label_column] = _label_name(rec[label_column], label_names, path, lineno)
        values = {}
        for col in wanted:
            value = rec[col]
            value = "" if value is None else str(value).strip()
            if not value:
                raise DataError(f"empty {col!r}", str(path), lineno)
            values[col] = value
        yield Example(values[text_column], values.get(text_b_column) if text_b_column else None,
                      values.get(label_column) if label_column else None, str(path), lineno)


def _label_name(value, names: Sequence[str], path: Path, line: int) -> str:
    """An integer label id (an int, or digits in a CSV cell) -> its name in `names`; DataError otherwise."""
    text = str(value).strip() if value is not None else ""
    if isinstance(value, bool) or not text.isdigit() or int(text) >= len(names):
        raise DataError(f"label {value!r} is not an id of the {len(names)} --label-names (0 to {len(names) - 1})",
                        str(path), line)
    return names[int(text)]


def read_examples(path: str | Path, text_column: str = "text", text_b_column: str | None = None,
                  label_column: str | None = "label", encoding: str = "utf-8", fmt: str | None = None
                  ) -> list[Example]:
    """All examples of a file (see iter_examples), or of a folder DIR/<label>/*.txt (see read_folder); DataError
    when it holds none."""
    saved = saved_dataset_files(path) if Path(path).is_dir() else None
    if saved is not None:  # a Hugging Face datasets save_to_disk split: its Arrow files in row order
        out = [e for f in saved for e in iter_examples(f, text_column, text_b_column, label_column, encoding, "arrow")]
        if not out:
            raise DataError("no examples (an empty dataset)", str(path))
        return out
    if Path(path).is_dir():
        if fmt is not None or text_b_column is not None:
            raise ConfigError(f"{path} is a folder of one example per file: --format and --text-b-column do not "
                              f"apply to it")
        return read_folder(path, encoding)
    detect_format(path, fmt, folders=True)
    out = list(iter_examples(path, text_column, text_b_column, label_column, encoding, fmt))
    if not out:
        raise DataError("no examples (only a header?)", str(path))
    return out


def label_vocab(*parts: Sequence[Example]) -> list[str]:
    """Sorted distinct labels of all `parts` (train, dev, test): the class order of the head and of every report."""
    return sorted({e.label for part in parts for e in part if e.label is not None})


def labels_missing_from_train(train: Sequence[Example], others: dict[str, Sequence[Example]]) -> list[str]:
    """One line per label of dev / test (`others`: {split: examples}) that training lacks: the model cannot learn it
    and its examples count as misses."""
    known = {e.label for e in train}
    out = []
    for split, examples in others.items():
        counts: dict[str, list[Example]] = {}
        for e in examples:
            if e.label not in known:
                counts.setdefault(e.label, []).append(e)
        for label, found in sorted(counts.items()):
            out.append(f"{split} label {label!r} ({len(found)} example(s), first at {found[0].source}:"
                       f"{found[0].line}) does not occur in the training data: the model cannot learn it and its "
                       f"examples count as misses")
    return out


def _group_key(e: Example) -> str:
    return " ".join(f"{e.text} {e.text_b or ''}".lower().split())


def split_examples(examples: Sequence[Example], sizes: Sequence[float], seed: int) -> list[list[Example]]:
    """Deterministic split into len(sizes) parts (e.g. train/dev/test), stratified by label. Sizes are all fractions
    (<= 1, of the whole) or all counts; counts may sum to less than the data (a seeded subset).

    Examples with the same text (case and surrounding space ignored) form one group that lands in one part, so no
    text is in two splits; a group counts under the label of its first example. Each label's groups (in a seeded
    order) are cut at round(n_label x cumulative share) into the parts, so every part holds each label in about the
    proportion of the whole, and every label with >= 2 examples has at least one in the first part (train). Parts
    short of a count are then filled from the unused groups."""
    groups: dict[str, list[Example]] = {}
    for e in examples:
        groups.setdefault(_group_key(e), []).append(e)
    keys = list(groups)
    random.Random(seed).shuffle(keys)
    n = len(examples)
    targets = split_counts(sizes, n, "examples")
    by_label: dict[str, list[str]] = {}
    for k in keys:
        by_label.setdefault(str(groups[k][0].label), []).append(k)
    part_of: dict[str, int] = {}
    filled = [0] * len(targets)
    for label in sorted(by_label):
        label_keys = by_label[label]
        n_label = sum(len(groups[k]) for k in label_keys)
        bounds, acc = [], 0
        for t in targets:
            acc += t
            bounds.append(round(n_label * acc / n) if n else 0)
        if n_label >= 2 and targets[0] > 0:
            bounds = [max(b, 1) for b in bounds]
        have, j = 0, 0
        for k in label_keys:
            while j < len(bounds) and have >= bounds[j]:
                j += 1
            if j == len(bounds):
                break
            part_of[k] = j
            have += len(groups[k])
            filled[j] += len(groups[k])
    for k in reversed(keys):  # per-label rounding can overshoot a part: give back its last groups
        j = part_of.get(k)
        if j is not None and filled[j] - len(groups[k]) >= targets[j]:
            del part_of[k]
            filled[j] -= len(groups[k])
    for exact in (True, False):  # top up short parts from the unused groups (seeded order), exactly if they fit
        for k in keys:
            if k in part_of:
                continue
            short = [j for j, t in enumerate(targets) if filled[j] < t
                     and (not exact or filled[j] + len(groups[k]) <= t)]
            if short:
                part_of[k] = short[0]
                filled[short[0]] += len(groups[k])
    parts: list[list[Example]] = [[] for _ in targets]
    for k in keys:
        if k in part_of:
            parts[part_of[k]].extend(groups[k])
    return parts


def encode(tok: Tokenizer, examples: Iterable[Example], max_seq_length: int,
           label2id: dict[str, int] | None = None) -> list[dict]:
    """{'input_ids', 'token_type_ids'[, 'labels']} of [CLS] A [SEP] (B [SEP]) per example, at most max_seq_length
    tokens (longest-first truncation of a pair)."""
    examples = list(examples)
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
