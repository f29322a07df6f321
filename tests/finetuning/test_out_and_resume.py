"""finetune's output folder and resume. Variants covered: an existing non-empty --out without --resume refused
before any work (classify, ner, mlm); --out that is a file refused; an empty existing folder accepted; the splits
appear whole or not at all (a write failing on the second part leaves no splits/); --resume with splits that
differ from the saved ones (other data / split / seed) refused naming the file, the same splits accepted."""
import errno

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
