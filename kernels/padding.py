"""The unpadded ("varlen") layout, derived here and nowhere else: unpad / pad between a padded batch (B, S, ...) and
the concatenated real tokens (total, ...), as FlashAttention's bert_padding does (unpad_input, pad_input,
index_first_axis). cu_seqlens (B + 1,) int32 are the running token offsets of each sequence (cu_seqlens[0] = 0,
cu_seqlens[-1] = total); max_seqlen is the longest sequence (0 for an empty batch). query_rows_layout gives the query
side when only some tokens query (FlashAttention's cu_seqlens_q). The C++ host helper
bertforge.csrc.unpad_offsets computes the same offsets for the data loaders (tests compare it with unpad_input)."""
from __future__ import annotations

from typing import Sequence

import torch


class _IndexFirstAxis(torch.autograd.Function):
    """x[indices] over the first axis with a scatter backward (cheaper than advanced-index autograd)."""

    @staticmethod
    def forward(ctx, x, indices):
        ctx.save_for_backward(indices)
        ctx.first_axis = x.shape[0]
        return x[indices]

    @staticmethod
    def backward(ctx, grad):
        (indices,) = ctx.saved_tensors
        out = grad.new_zeros((ctx.first_axis,) + grad.shape[1:])
        out[indices] = grad
        return out, None


def index_first_axis(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """x (N, ...) -> x[indices] (n, ...), with a scatter backward."""
    return _IndexFirstAxis.apply(x, indices)


def cu_seqlens_from_lengths(lengths: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, int]:
    """lengths (B,) (a tensor or a sequence of ints, on lengths' device) -> (cu_seqlens (B + 1,) int32 running
    offsets, max_seqlen int; 0 when B = 0). Reads max_seqlen back to the host (one sync on a GPU)."""
    lengths = torch.as_tensor(lengths, dtype=torch.int32)
    cu_seqlens = torch.nn.functional.pad(torch.cumsum(lengths, dim=0, dtype=torch.int32), (1, 0))
    return cu_seqlens, max_seqlen_of(cu_seqlens)


def seqlens_of(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """cu_seqlens (B + 1,) -> lengths (B,) int64."""
    return (cu_seqlens[1:] - cu_seqlens[:-1]).long()


def max_seqlen_of(cu_seqlens: torch.Tensor) -> int:
    """cu_seqlens (B + 1,) -> the longest sequence, an int (0 for B = 0); a host sync on a GPU."""
    return int(seqlens_of(cu_seqlens).max()) if cu_seqlens.numel() > 1 else 0


def unpad_input(x: torch.Tensor, attention_mask: torch.Tensor):
    """x (B, S, ...) and attention_mask (B, S) (1 = real) -> (x_unpad (total, ...), indices (total,) into B*S,
    cu_seqlens (B+1,) int32, max_seqlen int)."""
    lengths = attention_mask.sum(dim=-1, dtype=torch.int32)
    indices = attention_mask.flatten().nonzero(as_tuple=False).flatten()
    cu_seqlens, max_seqlen = cu_seqlens_from_lengths(lengths)
    return index_first_axis(x.flatten(0, 1), indices), indices, cu_seqlens, max_seqlen


def padding_mask_of(cu_seqlens: torch.Tensor, max_seqlen: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cu_seqlens (B + 1,) -> (attention_mask (B, S) bool, True = real, and indices (total,) int64 into B * S), the
    padded grid of S = max_seqlen columns (max_seqlen_of(cu_seqlens) when None) that unpad_input would undo."""
    lengths = seqlens_of(cu_seqlens)
    seq = int(max_seqlen) if max_seqlen is not None else max_seqlen_of(cu_seqlens)
    mask = torch.arange(seq, device=cu_seqlens.device)[None, :] < lengths[:, None]  # (B, S)
    return mask, mask.flatten().nonzero(as_tuple=False).flatten()


def pad_input(x: torch.Tensor, indices: torch.Tensor, batch: int, seq_len: int) -> torch.Tensor:
    """x (total, ...) -> (B, S, ...) with zeros at padding positions; indices as returned by unpad_input."""
    out = x.new_zeros((batch * seq_len,) + x.shape[1:])
    out = out.index_put((indices,), x)  # out-of-place so autograd gives x the gathered gradient
    return out.view((batch, seq_len) + x.shape[1:])


def token_sequence_ids(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """Index of the sequence each token belongs to: (total,) int64 on cu_seqlens' device (total = cu_seqlens[-1],
    passed so that no host sync is needed)."""
    lengths = seqlens_of(cu_seqlens)
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=cu_seqlens.device), lengths,
                                   output_size=total)


def cu_seqlens_to_position_ids(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """Position of each token within its own sequence: (total,) int64, restarting at 0 at each cu_seqlens entry."""
    starts = cu_seqlens[:-1].long()
    return torch.arange(total, device=cu_seqlens.device) - starts[token_sequence_ids(cu_seqlens, total)]


def query_rows_layout(cu_seqlens: torch.Tensor, rows: torch.Tensor,
                      total: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The query side of FlashAttention's varlen layout (cu_seqlens_q) when the queries are some of the tokens:
    rows (n,) flat indices into the (total, ...) token axis, any order -> (order (n,) int64, the permutation that
    sorts rows (rows[order] ascending, so grouped by sequence); cu_seqlens_q (B + 1,) int32, the offsets of each
    sequence's rows in that order; positions (n,) int32 of rows[order] within their sequences). No host sync."""
    rows = rows.to(device=cu_seqlens.device, dtype=torch.int64)
    order = torch.argsort(rows)
    ordered = rows[order]
    starts = cu_seqlens.long()
    cu_seqlens_q = torch.searchsorted(ordered, starts).to(torch.int32)  # rows before each sequence's first token
    positions = ordered - starts[token_sequence_ids(cu_seqlens, total)[ordered]]
    return order, cu_seqlens_q, positions.to(torch.int32)
