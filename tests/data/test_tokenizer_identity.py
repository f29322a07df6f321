"""The tokenizer identity stored in a dataset covers every setting that changes token ids (normaliser, pre-tokenizer,
model, special tokens), so data prepared with one tokenizer is never trained with another that encodes it
differently; a dataset stored with the older, narrower hash is refused with one line (prepare again)."""
import json
import shutil
from pathlib import Path

import pytest

from bertforge.config.pretrain import PretrainConfig
from bertforge.data.prepare import prepare
from bertforge.data.source import CorpusSource
from bertforge.data.tokenizer import load_tokenizer, tokenizer_hash
from bertforge.errors import DataError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ACCENTED = "Café naïve résumé Ångström müssen"


def _variant(src: Path, out: Path, **normalizer) -> Path:
    """A copy of the tokenizer folder `src` with normalizer fields changed (vocabulary untouched)."""
    shutil.copytree(src, out)
    raw = json.loads((out / "tokenizer.json").read_text())
    raw["normalizer"].update(normalizer)
    (out / "tokenizer.json").write_text(json.dumps(raw))
    return out


@pytest.fixture(scope="module")
def minilm_tok(tmp_path_factory):
    from bertforge.data.fetch import fetch

    src = fetch("minilm")
    out = tmp_path_factory.mktemp("minilm_tok") / "tok"
    out.mkdir()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, out / name)
    return out


def test_same_vocabulary_other_normalisation_hashes_differently(minilm_tok, tmp_path):
    keep = _variant(minilm_tok, tmp_path / "keep_accents", strip_accents=False)
    assert load_tokenizer(minilm_tok).encode(ACCENTED).ids != load_tokenizer(keep).encode(ACCENTED).ids
    assert tokenizer_hash(minilm_tok) != tokenizer_hash(keep)
    for i, change in enumerate([dict(handle_chinese_chars=False), dict(clean_text=False)]):
        assert tokenizer_hash(_variant(minilm_tok, tmp_path / f"v{i}", **change)) != tokenizer_hash(minilm_tok)


def test_equivalent_tokenizers_hash_equal(minilm_tok, tmp_path):
    # tokenizer.json vs the vocab.txt + tokenizer_config.json it came with; strip_accents None means "as lowercase"
    assert tokenizer_hash(minilm_tok) == tokenizer_hash(minilm_tok / "vocab.txt")
    explicit = _variant(minilm_tok, tmp_path / "explicit", strip_accents=True)
    assert tokenizer_hash(explicit) == tokenizer_hash(minilm_tok)


def _source(data: Path, tok: Path) -> CorpusSource:
    return CorpusSource(PretrainConfig.from_flat(data_dir=str(data), tokenizer=str(tok), micro_batch=2,
                                                 global_batch=2, max_seq_length=64, eval_fraction=0.5), 0, 1)


def test_pretrain_refuses_data_prepared_with_the_accent_stripping_tokenizer(minilm_tok, tmp_path):
    keep = _variant(minilm_tok, tmp_path / "keep_accents", strip_accents=False)
    prepare([FIXTURES / "accents_corpus.txt"], minilm_tok, tmp_path / "data", workers=1, max_seq_length=64,
            progress=False)
    _source(tmp_path / "data", minilm_tok)  # the same tokenizer is accepted
    with pytest.raises(DataError, match="prepared with another tokenizer") as err:
        _source(tmp_path / "data", keep)
    assert str(tmp_path / "data" / "meta.json") in str(err.value)


def test_dataset_with_the_older_hash_is_refused_with_prepare_again(minilm_tok, tmp_path):
    prepare([FIXTURES / "accents_corpus.txt"], minilm_tok, tmp_path / "data", workers=1, max_seq_length=64,
            progress=False)
    meta_path = tmp_path / "data" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["tokenizer_hash"] = "0123456789abcdef"  # the older 16-hex form without a version
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="older bertforge.*prepare it again"):
        _source(tmp_path / "data", minilm_tok)


def test_vocabulary_without_mask_is_refused_naming_the_file(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world"]) + "\n")
    with pytest.raises(DataError, match=r"vocab\.txt: the vocabulary lacks the special token\(s\) \[MASK\]"):
        load_tokenizer(vocab)
