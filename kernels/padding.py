"""Unpad / pad between a padded batch (B, S, ...) and the concatenated real tokens (total, ...), as
FlashAttention's bert_padding does. cu_seqlens (B + 1,) int32 are the running token offsets of each sequence."""
from __future__ import annotations

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


def unpad_input(x: torch.Tensor, attention_mask: torch.Tensor):
    """x (B, S, ...) and attention_mask (B, S) (1 = real) -> (x_unpad (total, ...), indices (total,) into B*S,
    cu_seqlens (B+1,) int32, max_seqlen int)."""
    lengths = attention_mask.sum(dim=-1, dtype=torch.int32)
    indices = attention_mask.flatten().nonzero(as_tuple=False).flatten()
    max_seqlen = int(lengths.max()) if lengths.numel() else 0
    cu_seqlens = torch.nn.functional.pad(torch.cumsum(lengths, dim=0, dtype=torch.int32), (1, 0))
    return _IndexFirstAxis.apply(x.flatten(0, 1), indices), indices, cu_seqlens, max_seqlen


def pad_input(x: torch.Tensor, indices: torch.Tensor, batch: int, seq_len: int) -> torch.Tensor:
    """x (total, ...) -> (B, S, ...) with zeros at padding positions; indices as returned by unpad_input."""
    out = x.new_zeros((batch * seq_len,) + x.shape[1:])
    out = out.index_put((indices,), x)  # out-of-place so autograd gives x the gathered gradient
    return out.view((batch, seq_len) + x.shape[1:])


def cu_seqlens_to_position_ids(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """Position of each token within its own sequence: (total,) int64, restarting at 0 at each cu_seqlens entry."""
    starts = cu_seqlens[:-1].long()
    lengths = cu_seqlens[1:].long() - starts
    seq_of_token = torch.repeat_interleave(torch.arange(lengths.numel(), device=cu_seqlens.device), lengths,
                                           output_size=total)
    return torch.arange(total, device=cu_seqlens.device) - starts[seq_of_token]
