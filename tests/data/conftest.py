"""Shared fixtures: a slice of the real Wikipedia extracts (fetched once into $BERTFORGE_CACHE), a small WordPiece
vocabulary trained on it, and the slice prepared as an indexed dataset."""
import json

import pytest

from engine.data.fetch import fetch
from engine.data.prepare import prepare
from engine.data.tokenizer import train_wordpiece

N_DOCS = 2500  # of 10,033 extracts; ~9k sentences, ~280k tokens


@pytest.fixture(scope="session")
def wiki_file():
    return fetch("wiki")


@pytest.fixture(scope="session")
def wiki_slice(wiki_file, tmp_path_factory):
    data = json.loads(wiki_file.read_text())
    keys = list(data)[:N_DOCS]
    path = tmp_path_factory.mktemp("wiki") / "wiki_slice.json"
    path.write_text(json.dumps({k: data[k] for k in keys}, indent=2))
    return path


@pytest.fixture(scope="session")
def tokenizer_dir(wiki_slice, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    train_wordpiece([wiki_slice], out, vocab_size=3000, show_progress=False)
    return out


@pytest.fixture(scope="session")
def prepared(wiki_slice, tokenizer_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    stats = prepare([wiki_slice], tokenizer_dir, out, docs_per_shard=700, progress=False)
    return out, stats
