"""finetune's output folder and resume. Variants covered: an existing non-empty --out without --resume refused
before any work (classify, ner, mlm); --out that is a file refused; an empty existing folder accepted; the splits
appear whole or not at all (a write failing on the second part leaves no splits/); --resume with splits that
differ from the saved ones (other data / split / seed) refused naming the file, the same splits accepted.
--resume against the run's recorded settings (OUT/run.json), each refused in one line naming the setting, the run's
value and the new one: other --train content, other --dev content, a --dev added, another --test, --seeds,
--max-seq-length, the labels, --label-names, another task, --lr, --epochs and --min-steps (with "cannot be
extended"), another recipe choice; accepted: the same data at another path, --micro-batch, --precision, --threads; a
run without run.json resumed: recorded then, with a note; an unreadable run.json refused. End to end (run_classify,
tiny model): a finished run resumed with another --dev file is refused, the same data copied elsewhere is accepted
(the finished seed kept), --max-seq-length changed is refused. `finetune --extend-steps` (CLI and API): one line,
"finetune has no --extend-steps"."""
import errno
import json
import shutil

import pytest

from bertforge.errors import ConfigError
from bertforge.finetuning import run
from bertforge.finetuning.data_classify import Example


def test_existing_out_refused_without_resume(tmp_path):
    from bertforge.config.finetune import ClassifyConfig, MlmConfig, NerConfig

    out = tmp_path / "o"
    out.mkdir()
    (out / "metrics.jsonl").write_text("{}\n")
    for cls, runner, data in ((ClassifyConfig, run.run_classify, {"train": "missing.csv"}),
                              (NerConfig, run.run_ner, {"train": "missing.conll"}),
                              (MlmConfig, run.run_mlm, {"corpus": ("missing.txt",)})):
        config = cls.from_flat(output_dir=str(out), model=str(tmp_path / "no-model"), **data)
        with pytest.raises(ConfigError, match=r"--out .*/o: already exists and is not empty; pass --resume"):
            runner(config)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        run.claim_output(str(tmp_path / "f"), False)
    (tmp_path / "empty").mkdir()
    assert run.claim_output(str(tmp_path / "empty"), False) == tmp_path / "empty"


def _parts():
    ex = lambda t, l: Example(t, None, l, "f", 1)
    return {"train": [ex("a", "x"), ex("b", "y")], "dev": [ex("c", "x")], "test": [ex("d", "y")]}


def test_splits_whole_or_not_at_all(tmp_path, monkeypatch):
    calls = []

    def failing(path, text, **kw):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        path.write_text(text)

    monkeypatch.setattr(run, "write_text", failing)
    with pytest.raises(OSError):
        run.save_splits(tmp_path, _parts(), "classify")
    assert len(calls) == 2 and list(tmp_path.iterdir()) == []


def test_resume_with_other_splits_refused(tmp_path):
    run.save_splits(tmp_path, _parts(), "classify")
    run.save_splits(tmp_path, _parts(), "classify", resume=True)  # the same: accepted
    other = _parts()
    other["dev"], other["test"] = other["test"], other["dev"]
    with pytest.raises(ConfigError, match=r"--resume: .*splits/dev.jsonl differs from the split of the data"):
        run.save_splits(tmp_path, other, "classify", resume=True)


# ---- the run's settings (OUT/run.json) -----------------------------------------------------------------------
def _settings(**changes):
    from bertforge.config.finetune import ClassifyConfig

    parts = {"train": [["a b", None, "x"], ["c", None, "y"]], "dev": [["d", None, "x"]], "test": []}
    parts.update(changes.pop("parts", {}))
    labels = changes.pop("labels", ["x", "y"])
    task = changes.pop("task", "classify")
    values = dict(output_dir="o", train="t.csv", dev="d.csv", lr=5e-5, min_steps=0, seeds=(1, 2))
    values.update(changes)
    config = ClassifyConfig.from_flat(values)
    return run.run_settings(config, config.training, task, labels, parts)


@pytest.mark.parametrize("name,changes,old,new", [
    ("the train data", {"parts": {"train": [["a b", None, "x"], ["c", None, "x"]]}}, None, None),
    ("the dev data", {"parts": {"dev": [["e", None, "x"]]}}, None, None),
    ("the test data", {"parts": {"test": [["f", None, "y"]]}}, None, "'"),
    ("--seeds", {"seeds": (1, 2, 3)}, "[1, 2]", "[1, 2, 3]"),
    ("--max-seq-length", {"max_seq_length": 128}, "512", "128"),
    ("the label set", {"labels": ["x", "y", "z"]}, "['x', 'y']", "['x', 'y', 'z']"),
    ("the task", {"task": "ner"}, "'classify'", "'ner'"),
    ("--lr", {"lr": 1e-4}, "5e-05", "0.0001"),
    ("--epochs", {"epochs": 5}, "3", "5"),
    ("--min-steps", {"min_steps": 150}, "0", "150"),
    ("--layer-lr-decay", {"layer_lr_decay": 0.9}, "1.0", "0.9"),
    ("--metric", {"metric": "macro_f1"}, "'auto'", "'macro_f1'"),  # the default: the recipe picks it from the data
])
def test_resume_with_other_settings_refused_in_one_line(tmp_path, name, changes, old, new):
    run.guard_run_settings(tmp_path, _settings(), resume=False)
    saved = json.loads((tmp_path / "run.json").read_text())["settings"]
    with pytest.raises(ConfigError) as err:
        run.guard_run_settings(tmp_path, _settings(**changes), resume=True)
    msg = str(err.value)
    assert msg.startswith(f"--resume: {name}") and " is " in msg, msg
    assert f"but the run in {tmp_path} was trained with " in msg, msg
    assert "\n" not in msg
    if old is not None:
        assert f"is {new}" in msg if new != "'" else "is '" in msg
        assert f"trained with {old}" in msg
    if name in ("--epochs", "--min-steps"):
        assert "cannot be extended" in msg
    assert json.loads((tmp_path / "run.json").read_text())["settings"] == saved  # the record is not rewritten


def test_resume_settings_allowed_changes_and_old_runs(tmp_path):
    run.guard_run_settings(tmp_path, _settings(), resume=False)
    same = _settings(train="moved/t.csv", dev="moved/d.csv", micro_batch=8, precision="bf16", threads=1)
    assert run.guard_run_settings(tmp_path, same, resume=True) is None
    old = tmp_path / "old"
    old.mkdir()
    note = run.guard_run_settings(old, _settings(), resume=True)  # a run from before the record
    assert note.startswith(f"note: {old / 'run.json'} was missing") and (old / "run.json").is_file()
    (old / "run.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"^--resume: .*run.json: cannot read the run's recorded settings"):
        run.guard_run_settings(old, _settings(), resume=True)
    from bertforge.train.resume import content_hash

    assert content_hash([]) is None and content_hash([["a"]]) != content_hash([["b"]])


def test_ner_label_names_change_refused(tmp_path):
    from bertforge.config.finetune import NerConfig

    def settings(names):
        config = NerConfig.from_flat(output_dir="o", train="t.jsonl", label_names=names)
        return run.run_settings(config, config.training, "ner", ["O", "B-PER", "I-PER"], {"train": [[["a"], ["O"]]]})

    run.guard_run_settings(tmp_path, settings("O,B-PER,I-PER"), resume=False)
    with pytest.raises(ConfigError, match=r"^--resume: --label-names is 'names.txt' but the run in .* was trained "
                                          r"with 'O,B-PER,I-PER'"):
        run.guard_run_settings(tmp_path, settings("names.txt"), resume=True)


def test_finetune_has_no_extend_steps(tmp_path, capsys):
    from bertforge import api
    from bertforge.cli import main

    assert main(["finetune", "ner", "--out", str(tmp_path / "o"), "--train", "t.conll", "--resume",
                 "--extend-steps", "9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bertforge finetune ner: error: finetune has no --extend-steps") and err.count("\n") == 1
    with pytest.raises(ConfigError, match="finetune has no --extend-steps"):
        api.finetune("ner", out=str(tmp_path / "o"), train="t.conll", extend_steps=9)


def test_classify_resume_checks_the_data(tmp_path, tiny_ckpt):
    from bertforge.config.finetune import ClassifyConfig
    from tests.finetuning._data import sentiment_csv

    train, dev = sentiment_csv(tmp_path / "train.csv", 16, 1), sentiment_csv(tmp_path / "dev.csv", 8, 2)
    out = tmp_path / "o"
    base = dict(model=str(tiny_ckpt), output_dir=str(out), max_seq_length=32, train=str(train), dev=str(dev),
                epochs=1, min_steps=1, global_batch=16, eval_micro_batch=16, progress=False, seeds=(1,))
    first = run.run_classify(ClassifyConfig.from_flat(base), echo=lambda _: None)
    assert first["status"] == "finished" and (out / "run.json").is_file()
    other = sentiment_csv(tmp_path / "other.csv", 8, 3)
    with pytest.raises(ConfigError) as err:
        run.run_classify(ClassifyConfig.from_flat(base, dev=str(other), resume=True), echo=lambda _: None)
    assert str(err.value).startswith(f"--resume: the dev data (content hash of its records) is '")
    assert f"but the run in {out} was trained with '" in str(err.value)
    with pytest.raises(ConfigError, match=r"^--resume: --max-seq-length is 48 but .* was trained with 32"):
        run.run_classify(ClassifyConfig.from_flat(base, max_seq_length=48, resume=True), echo=lambda _: None)
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(dev, moved / "dev.csv")
    lines = []
    again = run.run_classify(ClassifyConfig.from_flat(base, dev=str(moved / "dev.csv"), resume=True),
                             echo=lines.append)
    assert again["status"] == "finished" and any("finished in an earlier launch, kept" in x for x in lines)


def test_a_resume_inside_a_log_window_writes_the_uninterrupted_runs_line(tmp_path, tiny_ckpt, monkeypatch):
    """--log-every 4, a SIGTERM checkpoint at step 3: the checkpoint's meta.json carries the window's loss sum
    ("log_window"), so the resumed run's step-4 line averages steps 1-4 like the uninterrupted run's."""
    import os
    import signal

    from bertforge.cli import main
    from bertforge.train.trainer import Trainer
    from tests.finetuning._data import sentiment_csv

    train = sentiment_csv(tmp_path / "train.csv", 64, 0)
    base = ["finetune", "classify", "--model", str(tiny_ckpt), "--train", str(train), "--epochs", "1",
            "--global-batch", "8", "--micro-batch", "4", "--log-every", "4", "--dropout", "0", "--max-seq-length",
            "32", "--no-progress", "--threads", "1", "--recipe", "lecture"]
    assert main([*base, "--out", str(tmp_path / "full")]) == 0
    real = Trainer.train_step

    def train_step(self, *args, **kwargs):
        if self.step == 2:  # agreed during step 3: the checkpoint is at step 3
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", train_step)
    assert main([*base, "--out", str(tmp_path / "cut")]) == 143
    monkeypatch.setattr(Trainer, "train_step", real)
    metas = list((tmp_path / "cut" / "state").rglob("meta.json"))
    assert [json.loads(m.read_text())["log_window"]["steps"] for m in metas] == [3]
    assert main([*base, "--out", str(tmp_path / "cut"), "--resume"]) == 0

    def lines(out):
        return [(x["step"], x["loss"]) for x in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
                if x.get("split") == "train"]

    full = lines(tmp_path / "full")
    assert [s for s, _ in full] == [4, 8] and lines(tmp_path / "cut") == full  # exact: one rank, float64 sums
