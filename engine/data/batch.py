"""The pretraining micro batch (`Batch`) and the one function that lays it out (`collate`).

Every batch carries both layouts the model accepts, so a run switches with --unpadded alone:
- padded: input_ids, token_type_ids (B, S) int64 and attention_mask (B, S) int64 (1 = real token);
- unpadded (FlashAttention's varlen layout, kernels/padding.py): input_ids_unpad, token_type_ids_unpad,
  position_ids_unpad (total,) int64, cu_seqlens (B + 1,) int32 running offsets, max_seqlen, and
  cls_positions_unpad (B,) int64 the flat index of each sample's [CLS].
Packed batches (engine/data/packing.py) hold B samples in R rows of S tokens: the (R, S) views come along, there is
no attention_mask (a padded mask cannot keep packed samples apart), and the unpadded layout runs over the (R * S,)
grid with cu_seqlens (B + R + 1,) over samples and row tails, max_seqlen = S.

MLM targets come in one of two forms: host-masked (labels (B, S) / (R, S) with -100 where not masked, mlm_labels
(n,), masked_positions (n,) flat into B * S — into R * S when packed — and masked_positions_unpad (n,) flat into the
unpadded token axis), or unmasked for device masking (special_tokens_mask (B, S) / (R, S) and
special_tokens_mask_unpad (total,) bool, True = never mask: [CLS], [SEP], [PAD] and packed row tails; mask_seed).

Training batches also carry `dropout_ids` (B,) int64, each sample's dropout identity (engine/data/source.py:
`sample_dropout_ids`, from the run seed, the sample's epoch and its index); the model keys every dropout mask by it
and the position (engine/model.py), so a sample's masks do not depend on its batch, rank or layout. Held-out
batches carry none (evaluation has no dropout)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from bertforge.csrc import unpad_offsets
from bertforge.data import packing
from bertforge.kernels.padding import token_sequence_ids


PAD_DROPOUT_ID = 2 ** 62  # dropout id of packed padding segments: outside the samples' [0, 2^62)


@dataclass
class Batch:
    input_ids: torch.Tensor             # (B, S) int64 padded, or (R, S) packed rows
    token_type_ids: torch.Tensor        # same shape, 0 for [CLS] A [SEP], 1 for B [SEP], 0 on padding
    attention_mask: torch.Tensor | None  # (B, S) int64 1 = real token; None when packed
    input_ids_unpad: torch.Tensor       # (total,) int64 (packed: (R * S,))
    token_type_ids_unpad: torch.Tensor  # (total,) int64
    position_ids_unpad: torch.Tensor    # (total,) int64 position within its own sample
    cu_seqlens: torch.Tensor            # (B + 1,) int32 (packed: (B + R + 1,))
    max_seqlen: int                     # longest segment (packed: S)
    cls_positions_unpad: torch.Tensor   # (B,) int64 flat index of each sample's [CLS]
    next_sentence_label: torch.Tensor   # (B,) int64, 0 = IsNext, 1 = NotNext (HF's convention)
    num_tokens: int                     # real (non-padding) tokens
    packed: bool = False
    labels: torch.Tensor | None = None                   # (B, S) int64, -100 where not masked
    mlm_labels: torch.Tensor | None = None               # (n,) int64 original ids of the masked tokens
    masked_positions: torch.Tensor | None = None         # (n,) int64 flat into B * S (packed: R * S)
    masked_positions_unpad: torch.Tensor | None = None   # (n,) int64 flat into the unpadded token axis
    special_tokens_mask: torch.Tensor | None = None      # (B, S) bool, True = never mask (device masking)
    special_tokens_mask_unpad: torch.Tensor | None = None  # (total,) bool
    mask_seed: int | None = None                         # device masking's seed for this micro batch
    dropout_ids: torch.Tensor | None = None              # (B,) int64 in [0, 2^62) per-sample dropout identity

    @property
    def host_masked(self) -> bool:
        """True when the MLM targets were chosen on the host (mlm_labels present)."""
        return self.mlm_labels is not None

    @property
    def num_samples(self) -> int:
        return int(self.next_sentence_label.numel())

    def forward_inputs(self, unpadded: bool) -> dict[str, torch.Tensor | int]:
        """The model's forward arguments of one layout (without the MLM targets), with `dropout_ids` (one per
        sequence of the layout) when the batch has them. Raises ValueError for a packed batch asked in the padded
        layout."""
        if unpadded:
            out = {"input_ids": self.input_ids_unpad, "token_type_ids": self.token_type_ids_unpad,
                   "position_ids": self.position_ids_unpad, "cu_seqlens": self.cu_seqlens,
                   "max_seqlen": self.max_seqlen, "cls_positions": self.cls_positions_unpad}
        elif self.packed:
            raise ValueError("packed batches run only in the unpadded layout (--unpadded)")
        else:
            out = {"input_ids": self.input_ids, "token_type_ids": self.token_type_ids,
                   "attention_mask": self.attention_mask}
        if self.dropout_ids is not None:
            out["dropout_ids"] = self.segment_dropout_ids() if self.packed else self.dropout_ids
        return out

    def segment_dropout_ids(self) -> torch.Tensor:
        """(B + R,) int64 dropout ids of a packed batch's cu_seqlens segments: each sample's own, PAD_DROPOUT_ID for
        the row tails (padding, which never reaches a real token)."""
        out = torch.full((self.cu_seqlens.numel() - 1,), PAD_DROPOUT_ID, dtype=torch.int64)
        # a full row's empty tail starts where the next sample does: the token's segment is the non-empty one
        seg = token_sequence_ids(self.cu_seqlens, int(self.cu_seqlens[-1]))[self.cls_positions_unpad]
        out[seg] = self.dropout_ids
        return out

    def mlm_targets(self, unpadded: bool) -> dict[str, torch.Tensor]:
        """masked_positions (into the chosen layout) and mlm_labels of a host-masked batch."""
        if not self.host_masked:
            raise ValueError("this batch is unmasked (device masking): it has no MLM targets yet")
        return {"masked_positions": self.masked_positions_unpad if unpadded else self.masked_positions,
                "mlm_labels": self.mlm_labels}

    def special_mask(self, unpadded: bool) -> torch.Tensor:
        """The never-mask flags in the chosen layout (device masking)."""
        mask = self.special_tokens_mask_unpad if unpadded else self.special_tokens_mask
        if mask is None:
            raise ValueError("this batch is host-masked: device masking needs unmasked batches")
        return mask

    def pin_memory(self) -> "Batch":
        """A copy with every tensor in pinned host memory (for asynchronous host-to-device copies)."""
        return dataclasses.replace(self, **{f.name: getattr(self, f.name).pin_memory()
                                            for f in dataclasses.fields(self)
                                            if isinstance(getattr(self, f.name), torch.Tensor)})


def collate(input_ids: np.ndarray, token_type_ids: np.ndarray, lengths: np.ndarray, nsp_labels: np.ndarray, *,
            labels: np.ndarray | None = None, special_mask: np.ndarray | None = None, mask_seed: int | None = None,
            pack: bool = False, pad_rows_to: int | None = None, pad_id: int = 0) -> Batch:
    """Lay out one micro batch. input_ids, token_type_ids (B, S) int64 with each row's real tokens first;
    lengths (B,) real tokens per row; nsp_labels (B,). Host-masked: labels (B, S) int64, -100 where not masked.
    Device masking: special_mask (B, S) bool and mask_seed instead. pack: place the samples in rows of S tokens
    (first-fit decreasing; pad_rows_to fixes the row count, ValueError if too few; row tails hold pad_id)."""
    if (labels is None) == (special_mask is None):
        raise ValueError("collate: pass exactly one of labels (host masking) or special_mask (device masking)")
    t = torch.from_numpy
    B, S = input_ids.shape
    common = {"next_sentence_label": t(np.asarray(nsp_labels, dtype=np.int64)), "num_tokens": int(lengths.sum()),
              "mask_seed": mask_seed}
    if pack:
        p = packing.pack(lengths, S, pad_rows_to)
        real = np.arange(S)[None, :] < lengths[:, None]  # (B, S)

        def scatter(x: np.ndarray, fill, dtype=np.int64) -> np.ndarray:  # (B, S) -> (R * S,): real tokens placed
            out = np.full(p.rows * S, fill, dtype=dtype)
            out[p.token_index] = x[real]
            return out

        ids, types = scatter(input_ids, pad_id), scatter(token_type_ids, 0)
        out = dict(common, input_ids=t(ids.reshape(p.rows, S)), token_type_ids=t(types.reshape(p.rows, S)),
                   attention_mask=None, input_ids_unpad=t(ids), token_type_ids_unpad=t(types),
                   position_ids_unpad=t(p.position_ids), cu_seqlens=t(p.cu_seqlens), max_seqlen=S,
                   cls_positions_unpad=t(p.starts), packed=True)
        if labels is not None:
            masked = np.flatnonzero(labels.reshape(-1) != -100)  # sample-major, as unpacked
            masked_packed = p.starts[masked // S] + masked % S
            out.update(labels=t(scatter(labels, -100).reshape(p.rows, S)), mlm_labels=t(labels.reshape(-1)[masked]),
                       masked_positions=t(masked_packed), masked_positions_unpad=t(masked_packed.copy()))
        else:
            special = scatter(special_mask, True, dtype=bool)  # row tails are never masked
            out.update(special_tokens_mask=t(special.reshape(p.rows, S)), special_tokens_mask_unpad=t(special))
        return Batch(**out)

    cu_seqlens, indices, max_seqlen = unpad_offsets(lengths, S)
    attention = (np.arange(S)[None, :] < lengths[:, None]).astype(np.int64)
    out = dict(common, input_ids=t(input_ids), token_type_ids=t(token_type_ids), attention_mask=t(attention),
               input_ids_unpad=t(input_ids.reshape(-1)[indices]),
               token_type_ids_unpad=t(token_type_ids.reshape(-1)[indices]), position_ids_unpad=t(indices % S),
               cu_seqlens=t(cu_seqlens), max_seqlen=int(max_seqlen),
               cls_positions_unpad=t(cu_seqlens[:-1].astype(np.int64)), packed=False)
    if labels is not None:
        masked = np.flatnonzero(labels.reshape(-1) != -100)
        row, col = masked // S, masked % S
        out.update(labels=t(labels), mlm_labels=t(labels.reshape(-1)[masked]), masked_positions=t(masked),
                   masked_positions_unpad=t(cu_seqlens[row].astype(np.int64) + col))
    else:
        out.update(special_tokens_mask=t(special_mask), special_tokens_mask_unpad=t(special_mask.reshape(-1)[indices]))
    return Batch(**out)
