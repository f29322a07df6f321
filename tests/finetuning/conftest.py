"""A tiny BERT checkpoint directory (HF format, vocab.txt tokenizer) built once per session: 2 layers, hidden 32."""
import string

import pytest

WORDS = ("the a is was of and to in it good bad great awful fine okay movie film food service love hate meh "
         "john mary london paris google apple visited works at lives met new york city today yesterday").split()


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine the tiny models here run ~10x faster than with 2."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    from bertforge.config.model import tiny
    from bertforge.hf import export_hf
    from bertforge.model import BertModel

    root = tmp_path_factory.mktemp("tiny_ckpt")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.ascii_lowercase) + \
        [f"##{c}" for c in string.ascii_lowercase + string.digits] + list(string.digits) + list(".,!?@#'-") + \
        sorted(set(WORDS))
    vocab = list(dict.fromkeys(vocab))  # a duplicate entry would shift every later id (refused on loading)
    tok_dir = root / "tok"
    tok_dir.mkdir()
    (tok_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = tiny(hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=len(vocab),
                  max_position_embeddings=64)
    import torch

    torch.manual_seed(0)
    return export_hf(BertModel(config), root / "model", tokenizer_dir=tok_dir)


@pytest.fixture(scope="session")
def minilm_dir():
    """The real MiniLM weights (fetched once into $BERTFORGE_CACHE; a test fails, not skips, without them)."""
    from bertforge.data.fetch import fetch

    return fetch("minilm")


@pytest.fixture(scope="session")
def wnut_file():
    from bertforge.data.fetch import fetch

    return fetch("wnut16")
