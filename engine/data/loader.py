"""Pretraining input: map-style dataset over the NSP sample map, an even distributed sampler, the collator that
masks and emits padded + unpadded batches, and `build_pretraining_loader`.

Batches are built vectorised: the DataLoader's fetcher calls `PretrainingDataset.__getitems__(indices)` (one call
per batch, torch >= 2.0), which returns a `RawBatch`; `PretrainingCollator` masks it and converts to tensors. Use the
two together (build_pretraining_loader does); `dataset[i]` gives one sample as a dict for inspection."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from engine.csrc import unpad_offsets
from engine.data import packing
from engine.data.indexed import IndexedDataset
from engine.data.masking import Masker, continuation_ids, replacement_distribution
from engine.data.sample_map import cached_sample_map
from engine.data.tokenizer import SpecialIds, load_tokenizer, special_ids, tokenizer_hash


@dataclass
class RawBatch:
    input_ids: np.ndarray       # (B, S) int64, [CLS] A [SEP] B [SEP] then [PAD]
    token_type_ids: np.ndarray  # (B, S) int64, 0 for [CLS] A [SEP], 1 for B [SEP], 0 on padding
    lengths: np.ndarray         # (B,) int64 real tokens per row
    special_mask: np.ndarray    # (B, S) bool, True on [CLS]/[SEP]/[PAD]
    nsp_labels: np.ndarray      # (B,) int64, 0 = IsNext, 1 = NotNext (HF's convention)
    sample_ids: np.ndarray      # (B,) int64 indices into the sample map (mask seeds)


class PretrainingDataset(Dataset):
    """NSP + MLM samples of one split of a prepared dataset (map-style; len = samples in the map).

    data_dir: output of `bertforge prepare`; tokenizer: path/dir or tokenizers.Tokenizer (checked against the
    dataset's hash; needed for whole-word masking), or None to use the default BERT special ids 0-4
    ([PAD] [UNK] [CLS] [SEP] [MASK]). split 'train'/'eval'/'all' with eval_fraction held out by document hash."""

    def __init__(self, data_dir: str | Path, max_seq_len: int = 128, seed: int = 0, short_seq_prob: float = 0.1,
                 nsp_prob: float = 0.5, split: str = "train", eval_fraction: float = 0.0, tokenizer=None,
                 pad_to_max: bool = True):
        tok = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
        self.data = IndexedDataset(data_dir, tokenizer_hash(tok) if tok is not None else None)
        self.special: SpecialIds = special_ids(tok) if tok is not None else SpecialIds(0, 1, 2, 3, 4)
        self.continuation = continuation_ids(tok) if tok is not None else None
        self.max_seq_len, self.seed, self.pad_to_max = int(max_seq_len), int(seed), pad_to_max
        self.samples, self.map_path = cached_sample_map(self.data, split, eval_fraction, seed, max_seq_len,
                                                        short_seq_prob, nsp_prob)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        b = self.__getitems__([i])
        n = int(b.lengths[0])
        return {"input_ids": b.input_ids[0, :n], "token_type_ids": b.token_type_ids[0, :n],
                "next_sentence_label": int(b.nsp_labels[0])}

    def __getitems__(self, indices) -> RawBatch:
        idx = np.asarray(indices, dtype=np.int64)
        rows = np.asarray(self.samples[np.sort(idx)])[np.argsort(np.argsort(idx))]  # sorted reads from the mmap
        a0, a1, b0, b1 = (rows[:, j:j + 1] for j in range(4))                         # (B, 1) each
        la, lb = a1 - a0, b1 - b0
        lengths = (la + lb + 3)[:, 0]
        S = self.max_seq_len if self.pad_to_max else int(lengths.max())
        pos = np.arange(S, dtype=np.int64)[None, :]                                    # (1, S)
        in_a = (pos >= 1) & (pos <= la)
        in_b = (pos >= la + 2) & (pos <= la + lb + 1)
        src = np.where(in_a, a0 + pos - 1, np.where(in_b, b0 + pos - la - 2, 0))
        ids = np.full((len(idx), S), self.special.pad_id, dtype=np.int64)
        text = in_a | in_b
        ids[text] = self.data.gather(src[text])
        ids[:, 0] = self.special.cls_id
        ids[(pos == la + 1) | (pos == la + lb + 2)] = self.special.sep_id
        token_type = ((pos >= la + 2) & (pos <= la + lb + 2)).astype(np.int64)
        return RawBatch(ids, token_type, lengths, ~text, rows[:, 4].copy(), idx)

    def masker(self, mask_prob: float = 0.15, random_replacement: str = "unigram") -> Masker:
        """A Masker with this corpus's unigram frequencies ('unigram') or uniform replacements ('uniform')."""
        counts = self.data.unigram_counts() if random_replacement == "unigram" else None
        if random_replacement not in ("unigram", "uniform"):
            raise ValueError("random_replacement must be 'unigram' or 'uniform'")
        probs = replacement_distribution(self.data.vocab_size, self.special.as_list(), counts)
        return Masker(self.special.mask_id, probs, mask_prob, self.seed)


class PretrainingCollator:
    """RawBatch -> dict of tensors. Padded: input_ids, token_type_ids, attention_mask (B, S) int64,
    labels (B, S) int64 (-100 where not masked). Unpadded: input_ids_unpad, token_type_ids_unpad, position_ids_unpad
    (total,) int64, cu_seqlens (B+1,) int32, max_seqlen int, cls_positions_unpad (B,). Masked rows: mlm_labels
    (n_masked,) int64, masked_positions (n_masked,) flat into B*S, masked_positions_unpad (n_masked,) flat into total.
    next_sentence_label (B,) int64 (1 = NotNext). `epoch` seeds the masks with (seed, epoch, sample id).

    pack=True packs the samples into R rows of S tokens (engine/data/packing.py; S = the RawBatch's width, the
    dataset's max_seq_len). The model consumes the unpadded layout over the (R*S,) grid: input_ids_unpad,
    token_type_ids_unpad, position_ids_unpad (R*S,) with row tails of [PAD] (pad_id); cu_seqlens (B+R+1,) int32 over
    samples and row tails; max_seqlen = S; cls_positions_unpad (B,) and next_sentence_label (B,) in batch order;
    masked_positions_unpad (n_masked,) into R*S with the same mlm_labels as unpacked. Pass
    cls_positions=cls_positions_unpad to the model. The (R, S) views input_ids / token_type_ids / labels come along,
    but no attention_mask: a padded mask cannot keep packed samples apart. R is what first-fit decreasing needs, or
    pad_rows_to (fixed shapes; ValueError if too few). `packed` (bool) says which form a batch has.

    mask=False leaves masking to the GPU (engine/training/device_masking.py): ids stay unmasked, the mlm_labels /
    masked_positions* / labels keys are absent, and special_tokens_mask (B, S) / special_tokens_mask_unpad (total,)
    bool (True = never mask: [CLS], [SEP], [PAD], packed row tails) come instead."""

    def __init__(self, masker: Masker, continuation: np.ndarray | None = None, whole_word: bool = False,
                 pack: bool = False, pad_rows_to: int | None = None, pad_id: int = 0, mask: bool = True):
        if whole_word and continuation is None:
            raise ValueError("whole-word masking needs the tokenizer (to know '##' continuation pieces)")
        if pad_rows_to is not None and not pack:
            raise ValueError("pad_rows_to fixes the number of packed rows: it needs pack=True")
        self.masker, self.continuation, self.whole_word, self.epoch = masker, continuation, whole_word, 0
        if whole_word and not mask:
            raise ValueError("whole-word masking runs on the host only (mask=True)")
        self.pack, self.pad_rows_to, self.pad_id, self.mask = pack, pad_rows_to, pad_id, mask

    def __call__(self, batch, epoch: int | None = None) -> dict:
        """epoch: seeds the masks (default self.epoch); pass it when several threads share the collator."""
        if not isinstance(batch, RawBatch):
            raise TypeError("PretrainingCollator expects the RawBatch of PretrainingDataset.__getitems__")
        B, S = batch.input_ids.shape
        if not self.mask:
            return self._unmasked(batch)
        ws = ~self.continuation[batch.input_ids] if self.whole_word else None
        epoch = self.epoch if epoch is None else epoch
        ids, labels = self.masker(batch.input_ids, batch.special_mask, epoch, batch.sample_ids, ws)
        if self.pack:
            return self._packed(batch, ids, labels)
        cu_seqlens, indices, max_seqlen = unpad_offsets(batch.lengths, S)
        masked = np.flatnonzero(labels.reshape(-1) != -100)
        row, col = masked // S, masked % S
        attention = (np.arange(S)[None, :] < batch.lengths[:, None]).astype(np.int64)
        t = torch.from_numpy
        return {
            "input_ids": t(ids), "token_type_ids": t(batch.token_type_ids), "attention_mask": t(attention),
            "labels": t(labels),
            "input_ids_unpad": t(ids.reshape(-1)[indices]),
            "token_type_ids_unpad": t(batch.token_type_ids.reshape(-1)[indices]),
            "position_ids_unpad": t(indices % S),
            "cu_seqlens": t(cu_seqlens), "max_seqlen": int(max_seqlen),
            "cls_positions_unpad": t(cu_seqlens[:-1].astype(np.int64)),
            "mlm_labels": t(labels.reshape(-1)[masked]),
            "masked_positions": t(masked), "masked_positions_unpad": t(cu_seqlens[row].astype(np.int64) + col),
            "next_sentence_label": t(batch.nsp_labels), "packed": False, "num_tokens": int(batch.lengths.sum()),
        }

    def _unmasked(self, batch: RawBatch) -> dict:
        """Both layouts (or the packed one) of the unmasked ids with their special-token masks."""
        B, S = batch.input_ids.shape
        t = torch.from_numpy
        common = {"next_sentence_label": t(batch.nsp_labels), "num_tokens": int(batch.lengths.sum())}
        if self.pack:
            p = packing.pack(batch.lengths, S, self.pad_rows_to)
            real = np.arange(S)[None, :] < batch.lengths[:, None]
            ids = np.full(p.rows * S, self.pad_id, dtype=np.int64)
            types = np.zeros(p.rows * S, dtype=np.int64)
            special = np.ones(p.rows * S, dtype=bool)  # row tails are never masked
            ids[p.token_index], types[p.token_index] = batch.input_ids[real], batch.token_type_ids[real]
            special[p.token_index] = batch.special_mask[real]
            return {**common, "input_ids": t(ids.reshape(p.rows, S)), "token_type_ids": t(types.reshape(p.rows, S)),
                    "special_tokens_mask": t(special.reshape(p.rows, S)), "input_ids_unpad": t(ids),
                    "token_type_ids_unpad": t(types), "special_tokens_mask_unpad": t(special),
                    "position_ids_unpad": t(p.position_ids), "cu_seqlens": t(p.cu_seqlens), "max_seqlen": S,
                    "cls_positions_unpad": t(p.starts), "packed": True}
        cu_seqlens, indices, max_seqlen = unpad_offsets(batch.lengths, S)
        attention = (np.arange(S)[None, :] < batch.lengths[:, None]).astype(np.int64)
        return {**common, "input_ids": t(batch.input_ids), "token_type_ids": t(batch.token_type_ids),
                "attention_mask": t(attention), "special_tokens_mask": t(batch.special_mask),
                "input_ids_unpad": t(batch.input_ids.reshape(-1)[indices]),
                "token_type_ids_unpad": t(batch.token_type_ids.reshape(-1)[indices]),
                "special_tokens_mask_unpad": t(batch.special_mask.reshape(-1)[indices]),
                "position_ids_unpad": t(indices % S), "cu_seqlens": t(cu_seqlens), "max_seqlen": int(max_seqlen),
                "cls_positions_unpad": t(cu_seqlens[:-1].astype(np.int64)), "packed": False}

    def _packed(self, batch: RawBatch, ids: np.ndarray, labels: np.ndarray) -> dict:
        S = ids.shape[1]
        p = packing.pack(batch.lengths, S, self.pad_rows_to)
        real = np.arange(S)[None, :] < batch.lengths[:, None]  # (B, S)

        def scatter(x, fill):  # (B, S) -> (R, S): every sample's real tokens at their packed place
            out = np.full(p.rows * S, fill, dtype=np.int64)
            out[p.token_index] = x[real]
            return out.reshape(p.rows, S)

        packed_ids, packed_types = scatter(ids, self.pad_id), scatter(batch.token_type_ids, 0)
        masked = np.flatnonzero(labels.reshape(-1) != -100)  # sample-major, as unpacked
        masked_packed = p.starts[masked // S] + masked % S
        t = torch.from_numpy
        return {
            "input_ids": t(packed_ids), "token_type_ids": t(packed_types), "labels": t(scatter(labels, -100)),
            "input_ids_unpad": t(packed_ids.reshape(-1)), "token_type_ids_unpad": t(packed_types.reshape(-1)),
            "position_ids_unpad": t(p.position_ids),
            "cu_seqlens": t(p.cu_seqlens), "max_seqlen": S,
            "cls_positions_unpad": t(p.starts),
            "mlm_labels": t(labels.reshape(-1)[masked]),
            "masked_positions": t(masked_packed), "masked_positions_unpad": t(masked_packed.copy()),
            "next_sentence_label": t(batch.nsp_labels), "packed": True, "num_tokens": int(batch.lengths.sum()),
        }


class DistributedEvenSampler(Sampler[int]):
    """Every rank gets exactly ceil(num_samples / world_size) indices per epoch (the permutation is wrapped to fill
    the last round; drop_last=True uses floor instead), so no rank runs out first. Shuffled per epoch from
    (seed, epoch). Resumable at any sample: state_dict() records the epoch and the samples this rank consumed."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = False):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        if num_samples < 1 or (drop_last and num_samples < world_size):
            raise ValueError(f"{num_samples} samples cannot feed {world_size} ranks")
        self.num_samples, self.rank, self.world_size = num_samples, rank, world_size
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.epoch, self.start, self.consumed = 0, 0, 0
        self.per_rank = (num_samples // world_size) if drop_last else math.ceil(num_samples / world_size)

    def indices(self, epoch: int) -> np.ndarray:
        """This rank's (per_rank,) indices of `epoch`."""
        order = (np.random.default_rng([self.seed, epoch]).permutation(self.num_samples) if self.shuffle
                 else np.arange(self.num_samples))
        order = np.resize(order, self.per_rank * self.world_size)  # wraps around when padding
        return order[self.rank::self.world_size]

    def __iter__(self):
        self.consumed = self.start
        return iter(self.indices(self.epoch)[self.start:].tolist())

    def __len__(self) -> int:
        return self.per_rank - self.start

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.start, self.consumed = epoch, 0, 0

    def advance(self, n: int) -> None:
        """Record that n more samples of this epoch were consumed (the loader calls it per yielded batch)."""
        self.consumed += n

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed, "num_samples": self.num_samples,
                "world_size": self.world_size, "shuffle": self.shuffle, "drop_last": self.drop_last}

    def load_state_dict(self, state: dict) -> None:
        for key in ("num_samples", "world_size", "seed", "shuffle", "drop_last"):
            if state[key] != getattr(self, key):
                raise ValueError(f"cannot resume: sampler {key} was {state[key]}, now {getattr(self, key)}")
        self.epoch, self.start, self.consumed = state["epoch"], state["consumed"], state["consumed"]
        if self.start >= self.per_rank:  # the epoch was finished
            self.epoch, self.start, self.consumed = self.epoch + 1, 0, 0


class PretrainingLoader(DataLoader):
    """DataLoader that keeps the sampler's consumed count exact (per yielded batch) and the collator's epoch."""

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.collate_fn.epoch = epoch

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)
        self.collate_fn.epoch = self.sampler.epoch

    def __iter__(self):
        self.collate_fn.epoch = self.sampler.epoch
        for batch in super().__iter__():
            self.sampler.advance(len(batch["next_sentence_label"]))
            yield batch


def build_pretraining_loader(data_dir: str | Path, batch_size: int, max_seq_len: int = 128, seed: int = 0, *,
                             rank: int | None = None, world_size: int | None = None, split: str = "train",
                             eval_fraction: float = 0.0, tokenizer=None, short_seq_prob: float = 0.1,
                             nsp_prob: float = 0.5, mask_prob: float = 0.15, random_replacement: str = "unigram",
                             whole_word: bool = False, shuffle: bool = True, drop_last: bool = False,
                             num_workers: int = 0, pin_memory: bool = False, pack: bool = False,
                             pad_rows_to: int | None = None) -> PretrainingLoader:
    """MLM+NSP batches (see PretrainingCollator for the dict) of one split, evenly sharded over ranks (rank and
    world_size default to torch.distributed's, else 0 and 1). Call loader.set_epoch(e) each epoch; save
    loader.state_dict() in the checkpoint and load_state_dict() it to resume at the next sample. pack /
    pad_rows_to: sequence packing, see PretrainingCollator."""
    if rank is None or world_size is None:
        dist = torch.distributed
        on = dist.is_available() and dist.is_initialized()
        rank = dist.get_rank() if on and rank is None else rank or 0
        world_size = dist.get_world_size() if on and world_size is None else world_size or 1
    ds = PretrainingDataset(data_dir, max_seq_len, seed, short_seq_prob, nsp_prob, split, eval_fraction, tokenizer)
    sampler = DistributedEvenSampler(len(ds), rank, world_size, seed, shuffle, drop_last)
    collator = PretrainingCollator(ds.masker(mask_prob, random_replacement), ds.continuation, whole_word, pack,
                                   pad_rows_to, ds.special.pad_id)
    return PretrainingLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=collator,
                             num_workers=num_workers, pin_memory=pin_memory, persistent_workers=False)
