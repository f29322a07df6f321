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
    R.use_native_philox(csrc.philox_words, csrc.philox_keep, csrc.philox_keep_rows, csrc.philox_multiplier_rows)
    assert torch.equal(R.layer_norm_dropout_keep_ref(123, 5, 37, p, rows, **kw), want_ln)
    assert torch.equal(R.attention_dropout_keep_ref(2**33 + 9, 3, 2, 13, p, rows[:3], **kw), want_attn)
    assert torch.equal(R.attention_dropout_keep_ref(torch.tensor([2**33 + 9]), 3, 2, 13, p, rows[:3], **kw),
                       want_attn)
    got_words = R.philox4x32(77, torch.arange(6)[:, None], 1, rows[None, :5] & 0xFFFFFFFF, rows[None, :5] >> 32)
    assert all(torch.equal(a, b) for a, b in zip(got_words, want_words))
    assert R.token_row_ids(rows, torch.arange(5)).shape == (5,)


def _rows_oracle(seed, c0, c1, c2, c3, width, p, bits):
    """Row r's flags from the torch replay, one row at a time."""
    group = R.dropout_group(bits)
    out = []
    for r in range(len(width)):
        calls = torch.arange((int(width[r]) + group - 1) // group)
        words = R.philox4x32_torch(seed, calls + int(c0[r]), int(c1[r]), int(c2[r]), int(c3[r]))
        out.append(R._keep_flags(words, p, int(width[r]), bits))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


@pytest.mark.parametrize("bits", [8, 24])
@pytest.mark.parametrize("threads", [1, 3])
def test_rows_equal_the_torch_replay(bits, threads):
    """Awkward rows: widths 0, 1, a group less one, a group plus one, hundreds; counters at 0 and near 2^32; more
    threads than rows are worth; flags and fp32 multipliers."""
    g = torch.Generator().manual_seed(bits + threads)
    width = torch.tensor([0, 1, 15, 17, 37, 300, 4, 129, 0, 64])
    c0 = torch.randint(0, 2**31, (10,), generator=g)
    c0[4] = 2**32 - 10  # row 4 (37 wide: 3 calls at 8 bits, 10 at 24): up to the last counter a word holds
    c1, c2, c3 = (torch.randint(0, 2**32, (10,), generator=g) for _ in range(3))
    c2[0] = 0
    seed, p = 2**40 + 11, 0.3
    want = _rows_oracle(seed, c0, c1, c2, c3, width, p, bits)
    args = (seed & 0xFFFFFFFF, seed >> 32, *(t.numpy() for t in (c0, c1, c2, c3, width)), R.dropout_threshold(p, bits),
            bits)
    keep = csrc.philox_keep_rows(*args, threads=threads)
    assert keep.dtype == np.bool_ and keep.shape == (int(width.sum()),)
    assert torch.equal(torch.from_numpy(keep), want)
    mult = csrc.philox_multiplier_rows(*args, R.dropout_scale(p, bits), threads=threads)
    assert mult.dtype == np.float32
    assert torch.equal(torch.from_numpy(mult), R.keep_multiplier(want, R.quantized_dropout_p(p, bits)))


def test_bad_rows_are_refused():
    z = np.zeros(3, np.int64)
    with pytest.raises(ValueError, match="1-D arrays of one length"):
        csrc.philox_keep_rows(0, 0, z, z, z, z, np.zeros(2, np.int64), 3, 8)
    with pytest.raises(ValueError, match="widths must be >= 0"):
        csrc.philox_keep_rows(0, 0, z, z, z, z, np.array([1, -1, 2]), 3, 8)
    with pytest.raises(ValueError, match="bits must be 8 or 24"):
        csrc.philox_multiplier_rows(0, 0, z, z, z, z, z, 3, 16, 1.0)
    with pytest.raises(ValueError, match="below 2\\^24"):
        csrc.philox_keep_rows(0, 0, z, z, z, z, z, 2**24, 24)


@pytest.mark.parametrize("call", [
    lambda z, w: csrc.philox_keep_rows(-1, 0, z, z, z, z, w, 3, 8),
    lambda z, w: csrc.philox_keep_rows(0, 2**32, z, z, z, z, w, 3, 8),
    lambda z, w: csrc.philox_multiplier_rows(0, 0, z, z, z, z, w, -1, 8, 1.0),
    lambda z, w: csrc.philox_keep(2**32, 0, z, z, z, z, 3, 8),
    lambda z, w: csrc.philox_words(0, -5, z, z, z, z),
    lambda z, w: csrc.philox_keep_rows(0, 0, z, z, z, z, w.astype(np.float64) + 0.5, 3, 8),
    lambda z, w: csrc.philox_multiplier_rows(0, 0, z + 0.5, z, z, z, w, 3, 8, 1.0),
])
def test_out_of_range_words_and_non_integer_arrays_are_one_line_errors(call):
    """Keys and thresholds are 32-bit words, counters and widths integers: anything else is one ValueError line (not
    pybind11's several-line signature dump, and never a width or counter truncated from a float)."""
    with pytest.raises(ValueError) as err:
        call(np.zeros(2, np.int64), np.array([3, 5]))
    assert len(str(err.value).splitlines()) == 1


def test_any_thread_count_is_taken():
    """threads is a cap on the worker threads (rows and elements cap it too): any int, huge or not positive, runs."""
    z, w = np.zeros(2, np.int64), np.array([3, 40])
    want = csrc.philox_keep_rows(5, 6, z, z, z, z, w, 30, 8)
    for threads in (0, -3, 2**31, 2**70):
        assert np.array_equal(csrc.philox_keep_rows(5, 6, z, z, z, z, w, 30, 8, threads=threads), want)


@pytest.mark.parametrize("bits", [8, 24])
def test_varlen_attention_multipliers_through_either(bits, torch_only):
    """The per-sequence attention multipliers of the unpadded CPU path: one native call (views of one buffer) =
    the torch oracle's per-sequence masks, lengths 1 to past a group, with and without row ids; and the row
    dropout's multipliers likewise."""
    lengths, rows = [5, 1, 17, 33, 16], torch.tensor([3, 2**40 + 1, 0, 9, 2**62])
    want = [R.attention_varlen_dropout_multipliers(91, lengths, 3, 0.2, r, dropout_bits=bits) for r in (rows, None)]
    want_ln = R.layer_norm_dropout_multiplier_ref(17, 6, 37, 0.2, rows[[0, 1, 2, 3, 4, 0]], dropout_bits=bits)
    R.use_native_philox(csrc.philox_words, csrc.philox_keep, csrc.philox_keep_rows, csrc.philox_multiplier_rows)
    for r, w in zip((rows, None), want):
        got = R.attention_varlen_dropout_multipliers(torch.tensor([91]), lengths, 3, 0.2, r, dropout_bits=bits)
        assert [g.shape for g in got] == [(3, n, n) for n in lengths]
        assert all(torch.equal(a, b) for a, b in zip(got, w))
    assert torch.equal(R.layer_norm_dropout_multiplier_ref(17, 6, 37, 0.2, rows[[0, 1, 2, 3, 4, 0]],
                                                           dropout_bits=bits), want_ln)


def test_rows_into_a_given_buffer():
    width = np.array([3, 20, 0, 5])
    z = np.zeros(4, np.int64)
    args = (7, 9, np.arange(4), z, z + 1, z, width, R.dropout_threshold(0.5), 8)
    out = np.full(28, -1.0, np.float32)
    got = csrc.philox_multiplier_rows(*args, 2.0, out=out)
    assert got is out or np.shares_memory(got, out)
    assert np.array_equal(out, csrc.philox_multiplier_rows(*args, 2.0)) and set(np.unique(out)) <= {0.0, 2.0}
    flags = np.zeros(28, np.bool_)
    csrc.philox_keep_rows(*args, out=flags)
    assert np.array_equal(flags, out > 0)
    with pytest.raises(ValueError, match="out must be a writable contiguous 1-D array of 28 elements"):
        csrc.philox_multiplier_rows(*args, 2.0, out=np.zeros(27, np.float32))
    with pytest.raises(ValueError, match="out must be a 1-D float32 array"):
        csrc.philox_multiplier_rows(*args, 2.0, out=np.zeros(28, np.float64))


@pytest.mark.parametrize("threads", [1, 4])
def test_widths_adding_up_past_int64_are_refused(threads):
    """Widths whose int64 sum wraps (here to 200,000: an output far too small for the rows) are one ValueError, on one
    thread or several."""
    z, w = np.zeros(3, np.int64), np.array([2**63 - 1, 2**63 - 1, 2 + 200_000])
    with pytest.raises(ValueError, match="widths add up past 2\\^63 - 1"):
        csrc.philox_keep_rows(0, 0, z, z, z, z, w, 3, 8, threads=threads)
