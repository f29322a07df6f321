"""C++ unpad offsets vs the numpy reference, and vs the torch unpad helper the model uses."""
import numpy as np
import pytest
import torch

from bertforge.csrc import unpad_offsets, unpad_offsets_ref
from bertforge.kernels.padding import pad_input, unpad_input


@pytest.mark.parametrize("batch,seq_len,seed", [(1, 1, 0), (7, 13, 1), (33, 128, 2), (5, 0, 3), (64, 511, 4)])
def test_unpad_offsets_matches_numpy_reference(batch, seq_len, seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, seq_len + 1, size=batch)
    cu, idx, max_len = unpad_offsets(lengths, seq_len)
    cu_ref, idx_ref, max_ref = unpad_offsets_ref(lengths, seq_len)
    assert cu.dtype == np.int32 and idx.dtype == np.int64
    np.testing.assert_array_equal(cu, cu_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    assert max_len == max_ref


def test_unpad_offsets_agree_with_torch_unpad():
    lengths = np.array([5, 1, 9, 3])
    mask = torch.arange(9)[None, :] < torch.as_tensor(lengths)[:, None]
    x = torch.randn(4, 9, 6)
    x_unpad, indices, cu_seqlens, max_seqlen = unpad_input(x, mask)
    cu, idx, max_len = unpad_offsets(lengths, 9)
    np.testing.assert_array_equal(cu, cu_seqlens.numpy())
    np.testing.assert_array_equal(idx, indices.numpy())
    assert max_len == max_seqlen
    assert torch.equal(pad_input(x_unpad, indices, 4, 9)[mask], x[mask])


@pytest.mark.parametrize("bad", [[3, -1], [4, 10]])
def test_unpad_offsets_rejects_bad_lengths(bad):
    with pytest.raises(ValueError, match="outside"):
        unpad_offsets(np.array(bad), 9)
