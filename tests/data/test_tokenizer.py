import pytest

from bertforge.errors import DataError
from bertforge.data.fetch import fetch
from bertforge.data.tokenizer import load_tokenizer, special_ids, tokenizer_hash, train_wordpiece


def test_trained_files_and_special_ids(tokenizer_dir):
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tokenizer_dir / name).exists()
    tok = load_tokenizer(tokenizer_dir)
    assert tok.get_vocab_size() == 3000
    ids = special_ids(tok)
    assert (ids.pad_id, ids.unk_id, ids.cls_id, ids.sep_id, ids.mask_id) == (0, 1, 2, 3, 4)
    enc = tok.encode("The Ünited NATIONS", "second")
    assert enc.tokens[0] == "[CLS]" and enc.tokens.count("[SEP]") == 2 and "the" in enc.tokens  # uncased
    assert enc.type_ids[-1] == 1 and enc.type_ids[0] == 0


def test_hf_bert_tokenizer_fast_loads_it(tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertTokenizerFast.from_pretrained(str(tokenizer_dir))
    tok = load_tokenizer(tokenizer_dir)
    text = "Paris is the capital of France, isn't it?"
    assert hf(text)["input_ids"] == tok.encode(text).ids
    assert hf.mask_token_id == 4 and hf.pad_token_id == 0


def test_vocab_txt_and_json_agree(tokenizer_dir):
    a, b = load_tokenizer(tokenizer_dir / "tokenizer.json"), load_tokenizer(tokenizer_dir / "vocab.txt")
    assert tokenizer_hash(a) == tokenizer_hash(b) == tokenizer_hash(tokenizer_dir)
    text = "Encyclopaedic knowledge of Mozart's symphonies."
    assert a.encode(text).ids == b.encode(text).ids


def test_cased_and_size_change_the_hash(tmp_path):
    texts = ["Alpha beta gamma delta. Epsilon zeta eta theta."] * 50
    a = train_wordpiece(texts, tmp_path / "a", vocab_size=120, show_progress=False)
    b = train_wordpiece(texts, tmp_path / "b", vocab_size=120, lowercase=False, show_progress=False)
    assert tokenizer_hash(a) != tokenizer_hash(b)
    assert "Alpha" in b.encode("Alpha").tokens


def test_existing_bert_vocab_minilm():
    folder = fetch("minilm")  # 84 MB, once into $BERTFORGE_CACHE
    tok = load_tokenizer(folder / "vocab.txt")
    assert tok.get_vocab_size() == 30522 and special_ids(tok).mask_id == 103
    assert tok.encode("hello world").ids == [101, 7592, 2088, 102]


def test_missing_tokenizer(tmp_path):
    with pytest.raises(DataError, match="no tokenizer.json or vocab.txt"):
        load_tokenizer(tmp_path)
    with pytest.raises(DataError, match="no such file or folder") as info:
        load_tokenizer(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)
