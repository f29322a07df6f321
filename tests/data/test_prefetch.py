"""The background prefetcher serves exactly the source's own batches in order, resumes from the consumed position,
re-raises loader errors in the caller's thread and measures the time the caller waited."""
import dataclasses
import time

import pytest
import torch

from bertforge.data.prefetch import Prefetcher
from bertforge.data.synthetic import SyntheticSource


def _src():
    return SyntheticSource(200, 32, 4, seed=11)


def _same(a, b):
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), f.name
        else:
            assert x == y, f.name


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_same_batches_in_order_and_exact_resume(depth):
    plain, fetched = _src(), Prefetcher(_src(), depth, pin_memory=False)
    for _ in range(5):
        _same(plain.next_batch(), fetched.next_batch())
    state = fetched.state_dict()
    assert state == {"position": 5}
    resumed = Prefetcher(_src(), depth, pin_memory=False)
    resumed.load_state_dict(state)
    for _ in range(3):
        expected = plain.next_batch()
        _same(expected, resumed.next_batch())
    # a position set back (load_state_dict) drops the batches built ahead
    fetched.load_state_dict({"position": 1})
    _same(_src().batch_at(1), fetched.next_batch())
    fetched.close()
    resumed.close()


def test_attributes_and_eval_pass_through():
    fetched = Prefetcher(_src(), 2, pin_memory=False)
    assert fetched.vocab_size == 200 and fetched.mask_token_id == 4
    assert len(list(fetched.held_out_batches(8))) == 2  # micro batches of 4
    fetched.close()


class _Failing(SyntheticSource):
    def batch_at(self, position):
        if position == 2:
            raise ValueError("shard 3 is corrupt")
        time.sleep(0.05)
        return super().batch_at(position)


def test_loader_errors_surface_in_the_caller_and_wait_is_measured():
    fetched = Prefetcher(_Failing(200, 32, 4), 2, pin_memory=False)
    fetched.next_batch()
    assert fetched.wait_s >= 0.04  # the first batch was not ready: the caller waited for it
    fetched.next_batch()
    with pytest.raises(ValueError, match="shard 3 is corrupt"):
        fetched.next_batch()
    fetched.close()


def test_refuses_a_source_without_batch_at():
    class Opaque:
        def next_batch(self):
            return {}

    with pytest.raises(TypeError, match="batch_at"):
        Prefetcher(Opaque(), 2)
    assert Prefetcher(Opaque(), 0).next_batch() == {}
