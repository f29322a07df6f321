"""Hugging Face `datasets` folders, read with pyarrow alone (no `datasets` dependency).

`Dataset.save_to_disk(FOLDER)` writes FOLDER/state.json (`_data_files`: the Arrow IPC stream files, in row order),
FOLDER/dataset_info.json (`features`: column types, ClassLabel names) and the `data-0000K-of-0000N.arrow` files.
`DatasetDict.save_to_disk(FOLDER)` writes FOLDER/dataset_dict.json (`splits`) and one such folder per split.
Format: datasets' arrow_dataset.py / dataset_dict.py (save_to_disk, load_from_disk).

- `saved_dataset_files(folder)`: a split folder -> its Arrow files; a DatasetDict folder -> DataError naming the
  splits to pass instead; any other folder -> None.
- `class_names(folder_or_file, column)`: ClassLabel names of a column (dataset_info.json), or None.
- `columnar_records(path)`: (1-based row, {column: value}) of a Parquet or Arrow file, one record batch in memory.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from bertforge.errors import DataError

STATE = "state.json"
INFO = "dataset_info.json"
DICT = "dataset_dict.json"


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"not a readable Hugging Face datasets file: {exc}", str(path)) from None
    if not isinstance(value, dict):
        raise DataError("expected a JSON object (Hugging Face datasets metadata)", str(path))
    return value


def saved_dataset_files(folder: str | Path) -> list[Path] | None:
    """The Arrow files of a `save_to_disk` split folder in row order; None when `folder` is no such folder.
    DataError for a DatasetDict folder (which split is meant is the caller's choice) and for a listed file that
    is missing."""
    folder = Path(folder)
    if (folder / DICT).is_file():
        splits = _json(folder / DICT).get("splits") or sorted(p.name for p in folder.iterdir() if p.is_dir())
        raise DataError(f"a Hugging Face DatasetDict (splits: {', '.join(splits)}); pass one split folder, e.g. "
                        f"{folder / splits[0]}" if splits else "a Hugging Face DatasetDict without splits",
                        str(folder))
    if not (folder / STATE).is_file():
        return None
    entries = _json(folder / STATE).get("_data_files")
    if not isinstance(entries, list) or not entries:
        raise DataError("state.json lists no _data_files (not a datasets save_to_disk folder?)", str(folder / STATE))
    files = [folder / str(e.get("filename", "")) for e in entries if isinstance(e, dict)]
    for f in files:
        if not f.is_file():
            raise DataError("listed in state.json but missing (an incomplete copy?)", str(f))
    return files


def class_names(path: str | Path, column: str) -> list[str] | None:
    """ClassLabel names of `column` from the dataset_info.json beside `path` (a split folder or one of its files);
    None when there is no such file or the column is no ClassLabel."""
    path = Path(path)
    info = (path if path.is_dir() else path.parent) / INFO
    if not info.is_file():
        return None
    feature = (_json(info).get("features") or {}).get(column)
    if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" and isinstance(feature.get("names"), list):
        return [str(n) for n in feature["names"]]
    return None


def open_arrow(path: str):
    """(schema, iterator of record batches) of an Arrow IPC file (random access) or stream (Hugging Face
    `datasets`), memory-mapped. pyarrow's errors pass through (the callers name the file)."""
    import pyarrow as pa

    source = pa.memory_map(path)
    try:
        reader = pa.ipc.open_file(source)
        return reader.schema, (reader.get_batch(i) for i in range(reader.num_record_batches))
    except pa.ArrowInvalid:
        source.seek(0)
        reader = pa.ipc.open_stream(source)
        return reader.schema, iter(reader)


def columnar_records(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(row, record) of a Parquet file or an Arrow IPC file/stream, rows numbered from 1, one record batch held at
    a time. DataError naming the file when pyarrow cannot read it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = str(path)
    try:
        if path.endswith(".parquet"):
            batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        else:
            _, batches = open_arrow(path)
        row = 0
        for batch in batches:
            for record in batch.to_pylist():
                row += 1
                yield row, record
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"not a readable {'Parquet' if path.endswith('.parquet') else 'Arrow'} file: {exc}",
                        path) from None
