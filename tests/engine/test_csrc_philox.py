"""The C++ Philox-4x32-10 (engine/csrc.py) against the torch replay of the kernels' streams (kernels/reference.py):
bit-equal words and keep flags on awkward shapes, keys and counters, and the reference's mask functions give the same
masks through either."""
import numpy as np
import pytest
import torch

from bertforge import csrc
from bertforge.kernels import reference as R


@pytest.fixture
def torch_only():
    saved = R._NATIVE
    R.use_native_philox(None)
    yield
    R._NATIVE = saved


@pytest.mark.parametrize("seed", [0, 1, 2**32 - 1, 2**32, 0x6C8E9CF570932BD5, 2**63 - 1])
@pytest.mark.parametrize("n", [1, 3, 1000])
def test_words_equal_the_torch_replay(seed, n):
    g = torch.Generator().manual_seed(n)
    cs = [torch.randint(0, 2**32, (n,), generator=g, dtype=torch.int64) for _ in range(4)]
    cs[1][:1] = 0
    cs[2][-1:] = 2**32 - 1
    ref = R.philox4x32_torch(seed, *cs)
    got = csrc.philox_words(seed & 0xFFFFFFFF, seed >> 32, *(c.numpy() for c in cs))
    assert got.shape == (n, 4) and got.dtype == np.int64
    for w in range(4):
        assert torch.equal(torch.from_numpy(got[:, w].copy()), ref[w]), w
    thresh = R.dropout_threshold(0.37, 24)
    keep = csrc.philox_keep(seed & 0xFFFFFFFF, seed >> 32, *(c.numpy() for c in cs), thresh, 24)
    assert keep.dtype == np.bool_ and np.array_equal(keep, np.stack([(r.numpy() >> 8) >= thresh for r in ref], 1))
    thresh = R.dropout_threshold(0.37, 8)
    keep = csrc.philox_keep(seed & 0xFFFFFFFF, seed >> 32, *(c.numpy() for c in cs), thresh, 8)
    want = np.stack([((r.numpy() >> (8 * b)) & 0xFF) >= thresh for r in ref for b in range(4)], 1)  # LE bytes
    assert keep.shape == (n, 16) and np.array_equal(keep, want)


def test_bad_counters_are_refused():
    with pytest.raises(ValueError, match="four 1-D arrays of one length"):
        csrc.philox_words(0, 0, np.zeros(3, np.int64), np.zeros(2, np.int64), np.zeros(3, np.int64),
                          np.zeros(3, np.int64))
    z = np.zeros(3, np.int64)
    with pytest.raises(ValueError, match="bits must be 8 or 24"):
        csrc.philox_keep(0, 0, z, z, z, z, 3, 16)
    with pytest.raises(ValueError, match="below 2\\^8"):
        csrc.philox_keep(0, 0, z, z, z, z, 256, 8)


@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize("bits", [8, 24])
def test_reference_masks_are_the_same_through_either(p, bits, torch_only):
    """Awkward widths (37 columns: 2 full 16-groups + 5; 13 keys: less than one group) through the torch oracle and
    the C++ path."""
    rows = torch.tensor([0, 7, 2**40 + 3, 2**62 - 1, 5], dtype=torch.int64)
    kw = dict(dropout_bits=bits)
    want_ln = R.layer_norm_dropout_keep_ref(123, 5, 37, p, rows, **kw)
    want_attn = R.attention_dropout_keep_ref(2**33 + 9, 3, 2, 13, p, rows[:3], **kw)
    want_words = R.philox4x32(77, torch.arange(6)[:, None], 1, rows[None, :5] & 0xFFFFFFFF, rows[None, :5] >> 32)
    R.use_native_philox(csrc.philox_words, csrc.philox_keep)
    assert torch.equal(R.layer_norm_dropout_keep_ref(123, 5, 37, p, rows, **kw), want_ln)
    assert torch.equal(R.attention_dropout_keep_ref(2**33 + 9, 3, 2, 13, p, rows[:3], **kw), want_attn)
    assert torch.equal(R.attention_dropout_keep_ref(torch.tensor([2**33 + 9]), 3, 2, 13, p, rows[:3], **kw),
                       want_attn)
    got_words = R.philox4x32(77, torch.arange(6)[:, None], 1, rows[None, :5] & 0xFFFFFFFF, rows[None, :5] >> 32)
    assert all(torch.equal(a, b) for a, b in zip(got_words, want_words))
    assert R.token_row_ids(rows, torch.arange(5)).shape == (5,)
