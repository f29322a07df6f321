"""bertforge.kernels.padding is the one place that derives the unpadded layout (cu_seqlens, max_seqlen, the padded
grid's mask and indices, each token's sequence, the query rows' cu_seqlens_q): its functions agree with each other
and with a hand-built layout, and no other library module builds cu_seqlens or max_seqlen itself."""
import re
from pathlib import Path

import pytest
import torch

from bertforge.kernels.padding import (cu_seqlens_from_lengths, cu_seqlens_to_position_ids, max_seqlen_of, pad_input,
                                       padding_mask_of, query_rows_layout, seqlens_of, token_sequence_ids,
                                       unpad_input)

ROOT = Path(__file__).resolve().parents[2]
OWNER = ROOT / "kernels" / "padding.py"
# the C++ host helper's numpy reference derives the offsets independently on purpose (it is the oracle of csrc)
INDEPENDENT_REFERENCES = {ROOT / "engine" / "csrc.py"}
# what a re-derivation looks like: a running sum into a cu_* name, the lengths or ends read off cu_seqlens[1:]
# (max_seqlen, each token's sequence), a max over lengths into max_seqlen
RE_DERIVATION = [re.compile(r"cu\w*\s*(\[[^\]]*\])?\s*=.*cumsum"), re.compile(r"cu_seqlens\"?\]?\[1:\]"),
                 re.compile(r"max_seqlen\s*=\s*int\(.*\.max\("), re.compile(r"searchsorted\([^,]*cu")]


@pytest.mark.parametrize("lengths", [[3, 0, 5, 1], [7], [], [0, 0]])
def test_owner_functions_agree_with_a_hand_built_layout(lengths):
    cu, longest = cu_seqlens_from_lengths(lengths)
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    assert cu.dtype == torch.int32 and cu.tolist() == offsets
    assert longest == max_seqlen_of(cu) == max(lengths, default=0)
    assert seqlens_of(cu).tolist() == lengths
    total = offsets[-1]
    assert token_sequence_ids(cu, total).tolist() == [i for i, n in enumerate(lengths) for _ in range(n)]
    assert cu_seqlens_to_position_ids(cu, total).tolist() == [p for n in lengths for p in range(n)]
    mask, indices = padding_mask_of(cu, None)
    assert mask.shape == (len(lengths), longest) and mask.sum(1).tolist() == lengths
    # the grid of padding_mask_of is what unpad_input undoes, and pad_input rebuilds
    x = torch.arange(mask.numel() * 2, dtype=torch.float32).view(len(lengths), longest, 2)
    flat, idx, cu2, longest2 = unpad_input(x, mask)
    assert torch.equal(idx, indices) and torch.equal(cu2, cu) and longest2 == longest
    assert torch.equal(pad_input(flat, idx, len(lengths), longest), x * mask[..., None])


def test_padding_mask_of_takes_a_wider_grid():
    mask, indices = padding_mask_of(torch.tensor([0, 2, 3], dtype=torch.int32), 4)
    assert mask.tolist() == [[True, True, False, False], [True, False, False, False]]
    assert indices.tolist() == [0, 1, 4]


def test_query_rows_layout_groups_the_rows_by_sequence():
    """Rows in any order (a sequence without rows, a repeated row) -> the sorting permutation, the rows' offsets per
    sequence (cu_seqlens_q) and their positions, as counted by hand."""
    cu = torch.tensor([0, 4, 5, 9, 12], dtype=torch.int32)  # lengths 4, 1, 4, 3
    rows = torch.tensor([11, 4, 0, 3, 9, 0])
    order, cu_q, positions = query_rows_layout(cu, rows, 12)
    assert rows[order].tolist() == [0, 0, 3, 4, 9, 11]
    assert cu_q.dtype == positions.dtype == torch.int32
    assert cu_q.tolist() == [0, 3, 4, 4, 6] and positions.tolist() == [0, 0, 3, 0, 0, 2]


def test_no_library_module_re_derives_the_layout():
    sources = [p for d in ("engine", "kernels") for p in (ROOT / d).rglob("*.py")]
    assert OWNER in sources and len(sources) > 20
    offenders = []
    for path in sources:
        if path == OWNER or path in INDEPENDENT_REFERENCES:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if any(p.search(code) for p in RE_DERIVATION):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "derive the unpadded layout with bertforge.kernels.padding:\n" + "\n".join(offenders)
