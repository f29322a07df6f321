"""Malformed inputs and hostile file systems: one line naming the file and the cause, nothing half-written.
Kinds and variants covered:

- an output path that is an existing file (tokenizer train --out FILE, plot --out under a FILE) -> one line
- a full disk: simulated (a small tmpfs cannot be mounted here) by a writer raising ENOSPC inside bertforge.io's
  atomic_file and atomic_dir: the previous file / folder is intact, no temporary is left, the error names the path,
  and the CLI turns it into one line
- OSErrors the CLI names: ENOSPC, EEXIST, ENOTDIR, ELOOP, EACCES, EROFS; an OSError without a file name or of
  another kind keeps its traceback (a bug)
- finetune inputs: a symbolic link loop and an unreadable file (simulated: the tests may run as root) -> DataError
- export of a run whose newest checkpoint has a truncated file: the previous one is used with a warning line; a
  damaged step_N given directly, or every checkpoint damaged, is one line
- plot of a metrics.jsonl whose last line is cut: plotted without it, with a warning; a bad middle line named
- (CSV with an unterminated quote and CoNLL mixing TAB and space columns: tests/finetuning/test_small_fixes.py and
  tests/finetuning/test_tag_files.py)
"""
import errno
import json

import pytest

from bertforge.cli import main
from bertforge.errors import CheckpointError, DataError, describe_os_error
from bertforge.io import atomic_dir, atomic_file, write_text


def test_output_path_is_an_existing_file(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("alpha beta gamma delta\n" * 20)
    blocker = tmp_path / "out"
    blocker.write_text("I am a file")
    assert main(["tokenizer", "train", str(corpus), "--out", str(blocker), "--vocab-size", "64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(blocker) in err and "in the way" in err
    assert blocker.read_text() == "I am a file"


@pytest.mark.parametrize("code", ["ENOSPC", "EEXIST", "ENOTDIR", "ELOOP", "EACCES", "EROFS"])
def test_os_errors_named(code):
    line = describe_os_error(OSError(getattr(errno, code), "x", "/some/path"))
    assert line.startswith("/some/path: ") and line.endswith(f"({code})")


def test_other_os_errors_keep_their_traceback():
    assert describe_os_error(OSError(errno.ENOSPC, "x")) is None  # no file name
    assert describe_os_error(OSError(errno.EIO, "x", "/p")) is None


def test_full_disk_leaves_the_previous_file(tmp_path):
    target = write_text(tmp_path / "summary.json", "old")
    with pytest.raises(OSError) as err:
        with atomic_file(target, "w") as fh:
            fh.write("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert err.value.filename == str(target) and describe_os_error(err.value).endswith("(ENOSPC)")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_full_disk_leaves_the_previous_folder(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(OSError) as err:
        with atomic_dir(folder) as tmp:
            (tmp / "model.safetensors").write_bytes(b"x")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert err.value.filename == str(folder)
    assert [p.name for p in tmp_path.iterdir()] == ["hf"] and (folder / "config.json").read_text() == "{}"


def test_symlink_loop_and_unreadable_input(tmp_path, monkeypatch):
    from bertforge.finetuning import data_ner as dn
    from bertforge.finetuning import reading

    loop = tmp_path / "loop.conll"
    loop.symlink_to(loop)
    with pytest.raises(DataError, match=r"loop.conll: cannot read it: Too many levels of symbolic links"):
        dn.read_conll(loop)
    ok = tmp_path / "ok.conll"
    ok.write_text("a\tO\n")

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(ok))

    monkeypatch.setattr(reading, "open", denied, raising=False)
    with pytest.raises(DataError, match=r"ok.conll: cannot read it: Permission denied"):
        dn.read_conll(ok)


def _fake_checkpoint(root, step, payload):
    from bertforge.train.checkpoint import record_files, tag_for

    d = root / "checkpoints" / tag_for(step)
    d.mkdir(parents=True)
    (d / "mp_rank_00_model_states.pt").write_bytes(payload)
    (d / "meta.json").write_text(json.dumps({"step": step, "files": record_files(d)}))
    (root / "checkpoints" / "latest").write_text(tag_for(step))
    return d


def test_export_falls_back_past_a_truncated_checkpoint(tmp_path):
    from bertforge.train.checkpoint import resolve_checkpoint

    first = _fake_checkpoint(tmp_path, 1, b"a" * 100)
    newest = _fake_checkpoint(tmp_path, 2, b"b" * 100)
    (newest / "mp_rank_00_model_states.pt").write_bytes(b"b" * 40)  # truncated
    lines = []
    assert resolve_checkpoint(tmp_path, verify=True, log=lines.append) == first
    assert len(lines) == 1 and "mp_rank_00_model_states.pt: 40 bytes" in lines[0] and "step_00000001" in lines[0]
    assert resolve_checkpoint(tmp_path) == newest  # unverified: the latest pointer, as before
    with pytest.raises(CheckpointError, match=r"40 bytes, meta.json records 100 \(the checkpoint is damaged"):
        resolve_checkpoint(newest, verify=True)
    (first / "mp_rank_00_model_states.pt").write_bytes(b"c" * 100)  # same size, other bytes
    with pytest.raises(CheckpointError, match="every checkpoint is damaged"):
        resolve_checkpoint(tmp_path, verify=True, log=lines.append)


def test_metrics_with_a_cut_last_line(tmp_path):
    from bertforge.train.metrics import read_metrics

    rows = [{"split": "train", "step": i, "loss": 1.0 / (i + 1)} for i in range(3)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "metrics.jsonl").write_text(text + '{"split": "train", "st')
    notes = []
    assert read_metrics(tmp_path, notes) == rows
    assert notes == [f"{tmp_path / 'metrics.jsonl'}:4: the last line is cut short (a killed run?); left out"]
    (tmp_path / "metrics.jsonl").write_text('{"split": "tr\n' + text)
    with pytest.raises(DataError, match=r"metrics.jsonl:1: not valid JSON"):
        read_metrics(tmp_path)


def test_pretrain_output_dir_is_an_existing_file(prepared, tokenizer_dir, tmp_path, capsys):
    """Refused in one line naming the flag before any data is opened or an engine built."""
    blocker = tmp_path / "run"
    blocker.write_text("I am a file")
    assert main(["pretrain", "--data", str(prepared[0]), "--tokenizer", str(tokenizer_dir), "--preset", "tiny",
                 "--steps", "2", "--no-progress", "--output-dir", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--output-dir {blocker}: is a file" in err, err
    assert blocker.read_text() == "I am a file"
