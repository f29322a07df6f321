"""torch.compile sees the whole pretraining forward as ONE graph when the Triton kernels are on (each is a
torch.library custom op it keeps opaque), padded or unpadded: no graph break, no host sync in the model. With
kernels='none' the unpadded attention reference pads with a data-dependent nonzero (a known break: the reference is
the baseline, not the fast path)."""
import pytest
import torch

from bertforge.config import preset
from bertforge.heads import BertForPreTraining
from bertforge.training.trainer import model_inputs
from bertforge.data.synthetic import SyntheticSource


@pytest.mark.parametrize("unpadded", [False, True])
def test_pretraining_forward_is_one_graph_with_kernels(unpadded):
    pytest.importorskip("triton")
    cfg = preset("tiny", vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, kernels="triton")
    model = BertForPreTraining(cfg)
    inputs = model_inputs(SyntheticSource(300, 32, 4, seed=2).batch_at(0), unpadded, torch.device("cpu"))
    explained = torch._dynamo.explain(model)(**inputs)
    assert explained.graph_break_count == 0, [r.reason[:200] for r in explained.break_reasons]
    assert explained.graph_count == 1
