"""Hugging Face `datasets` folders and Parquet / Arrow files as classification and corpus input, read with pyarrow
(the save_to_disk layout written here by hand: state.json, dataset_info.json, Arrow stream files)."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bertforge.data.hf_datasets import saved_dataset_files
from bertforge.data.readers import read_documents
from bertforge.errors import DataError
from bertforge.finetuning.data_classify import read_examples

TEXTS = ["good movie", "bad film", "great food", "awful service", "fine okay"]
LABELS = [1, 0, 1, 0, 1]


def save_to_disk(folder, texts, labels, shards=2):
    """The folder `datasets.Dataset.save_to_disk` writes: Arrow IPC streams + state.json + dataset_info.json."""
    folder.mkdir(parents=True)
    table = pa.table({"text": texts, "label": pa.array(labels, pa.int64())})
    files, step = [], -(-len(texts) // shards)
    for k in range(shards):
        name = f"data-{k:05d}-of-{shards:05d}.arrow"
        with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table.slice(k * step, step))
        files.append({"filename": name})
    (folder / "state.json").write_text(json.dumps({"_data_files": files, "_fingerprint": "x", "_split": None}))
    (folder / "dataset_info.json").write_text(json.dumps({"features": {
        "text": {"dtype": "string", "_type": "Value"}, "label": {"names": ["neg", "pos"], "_type": "ClassLabel"}}}))
    return folder


def test_save_to_disk_split_reads_in_row_order_with_class_names(tmp_path):
    split = save_to_disk(tmp_path / "ds" / "train", TEXTS, LABELS)
    examples = read_examples(split)
    assert [e.text for e in examples] == TEXTS
    assert [e.label for e in examples] == ["pos", "neg", "pos", "neg", "pos"]
    assert [d.text for d in read_documents([split])] == TEXTS  # prepare's and finetune mlm's reader


def test_dataset_dict_root_names_its_splits(tmp_path):
    save_to_disk(tmp_path / "ds" / "train", TEXTS, LABELS)
    save_to_disk(tmp_path / "ds" / "test", TEXTS, LABELS)
    (tmp_path / "ds" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    with pytest.raises(DataError, match=r"DatasetDict \(splits: train, test\); pass one split folder"):
        saved_dataset_files(tmp_path / "ds")


def test_parquet_and_arrow_files_classify(tmp_path):
    pq.write_table(pa.table({"sentence": TEXTS, "label": ["a", "b", "a", "b", "a"]}), tmp_path / "x.parquet")
    examples = read_examples(tmp_path / "x.parquet", text_column="sentence")
    assert [(e.text, e.label, e.line) for e in examples][:2] == [("good movie", "a", 1), ("bad film", "b", 2)]
    with pa.OSFile(str(tmp_path / "x.arrow"), "wb") as sink:
        table = pa.table({"text": ["", "fine"], "label": ["a", "b"]})
        with pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
    with pytest.raises(DataError, match=r"x\.arrow.*1.*empty 'text'"):
        read_examples(tmp_path / "x.arrow")
