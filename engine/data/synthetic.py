"""Synthetic pretraining batches with a learnable structure, for tests and benchmarks (no data needed): tokens
follow a fixed random bigram table, segment B continues A for IsNext. Same `BatchSource` protocol and `Batch`
layout as the prepared dataset's source (engine/data/source.py). Sample j of global micro batch k is sample
k * B + j of epoch 0 (its dropout identity); pack=True lays batches out packed. Held-out sample j is drawn (and
masked, on the host) from a stream of its own, so held-out batches of any size hold the same samples."""
from __future__ import annotations

import numpy as np
import torch

from bertforge.data.batch import Batch, collate
from bertforge.data.splitmix import mask_seed, sample_dropout_ids

# the WordPiece trainer's special-token order: [PAD] [UNK] [CLS] [SEP] [MASK]
MASK_ID, CLS_ID, SEP_ID, PAD_ID = 4, 2, 3, 0
HELD_OUT = 10 ** 12  # stream index of held-out sample 0: far beyond any training batch's


class SyntheticSource:
    """Deterministic random NSP/MLM batches with a learnable structure (tokens follow a fixed random bigram table,
    B continues A for IsNext): for tests and benchmarks, no data needed."""

    def __init__(self, vocab_size: int, max_seq_length: int, micro_batch: int, rank: int = 0, world: int = 1,
                 seed: int = 0, mlm_probability: float = 0.15, mask: bool = True, pack: bool = False):
        self.vocab_size, self.max_seq_length, self.micro_batch = vocab_size, max_seq_length, micro_batch
        self.mask, self.pack = mask, pack
        self.rank, self.world, self.seed, self.p = rank, world, seed, mlm_probability
        self.position = 0  # micro batches this rank has taken
        g = torch.Generator().manual_seed(seed + 7)
        self.next_token = torch.randint(5, vocab_size, (vocab_size, 4), generator=g)  # 4 likely successors
        self.tokenizer_dir = None

    mask_token_id = MASK_ID

    def start(self) -> None:
        """Nothing to build or map (BatchSource protocol)."""

    @property
    def replacement_probs(self):  # (V,) uniform over the non-special tokens 5..V-1 (for --masking device)
        from bertforge.data.masking import build_masker

        return build_masker(MASK_ID, self.vocab_size, range(5)).replacement_probs

    def _sequence(self, g: torch.Generator, n: int) -> torch.Tensor:
        out = torch.empty(n, dtype=torch.long)
        tok = int(torch.randint(5, self.vocab_size, (1,), generator=g))
        for i in range(n):
            out[i] = tok
            tok = int(self.next_token[tok, int(torch.randint(0, 4, (1,), generator=g))])
        return out

    def _batch(self, index: int) -> Batch:
        batch = self._layout(index)
        B = self.micro_batch
        batch.dropout_ids = torch.from_numpy(sample_dropout_ids(self.seed, 0, index * B + np.arange(B)))
        return batch

    def _layout(self, index: int) -> Batch:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        ids, types, lengths, nsp, special = self._rows(g, self.micro_batch)
        if not self.mask:  # device masking: unmasked ids, special-token masks and a seed
            return collate(ids.numpy(), types.numpy(), lengths.numpy(), nsp.numpy(), special_mask=special.numpy(),
                           mask_seed=mask_seed(self.seed, 0, index), pack=self.pack)
        labels = self._host_mask(g, ids, special)
        return collate(ids.numpy(), types.numpy(), lengths.numpy(), nsp.numpy(), labels=labels.numpy(),
                       pack=self.pack)

    def _rows(self, g: torch.Generator, B: int) -> tuple[torch.Tensor, ...]:
        """B unmasked rows from `g`: ids, token types (B, S), lengths, NSP labels (B,), special-token mask (B, S)."""
        S = self.max_seq_length
        ids = torch.full((B, S), PAD_ID, dtype=torch.long)
        types = torch.zeros((B, S), dtype=torch.long)
        lengths = torch.zeros(B, dtype=torch.long)
        nsp = torch.randint(0, 2, (B,), generator=g)
        for b in range(B):
            length = int(torch.randint(S // 2, S + 1, (1,), generator=g))
            a_len = (length - 3) // 2
            b_len = length - 3 - a_len
            a = self._sequence(g, a_len + b_len)
            second = a[a_len:] if nsp[b] == 0 else self._sequence(g, b_len)
            row = torch.cat([torch.tensor([CLS_ID]), a[:a_len], torch.tensor([SEP_ID]), second, torch.tensor([SEP_ID])])
            ids[b, :length], lengths[b] = row, length
            types[b, a_len + 2:length] = 1
        real = torch.arange(S)[None, :] < lengths[:, None]
        special = (ids == CLS_ID) | (ids == SEP_ID) | ~real
        return ids, types, lengths, nsp, special

    def _host_mask(self, g: torch.Generator, ids: torch.Tensor, special: torch.Tensor) -> torch.Tensor:
        """Mask `ids` (B, S) in place; returns the MLM labels (B, S), -100 where not chosen."""
        # 80/10/10 drawn from this batch's torch stream, not data.masking's counter-based Masker: a stream of its own,
        # which tests and benchmarks pin their synthetic loss curves on
        B, S = ids.shape
        chosen = (torch.rand((B, S), generator=g) < self.p) & ~special
        chosen[:, 1] |= ~chosen.any(1)  # at least one masked token per sequence
        flat = chosen.flatten().nonzero().flatten()
        labels = torch.full((B * S,), -100, dtype=torch.long)
        labels[flat] = ids.flatten()[flat]
        r = torch.rand(flat.shape, generator=g)
        ids.view(-1)[flat[r < 0.8]] = MASK_ID
        rand_rows = flat[(r >= 0.8) & (r < 0.9)]
        ids.view(-1)[rand_rows] = torch.randint(5, self.vocab_size, rand_rows.shape, generator=g)
        return labels.view(B, S)

    def next_batch(self) -> Batch:
        batch = self.batch_at(self.position)
        self.position += 1
        return batch

    def batch_at(self, position: int) -> Batch:
        return self._batch(position * self.world + self.rank)

    def held_out_batches(self, n_samples: int):
        """This rank's share of n_samples held-out samples in micro batches (global batch k holds samples
        [k B, min((k + 1) B, n)) and goes to rank k % world), masked on the host: the same for any micro batch and
        rank count."""
        B = self.micro_batch
        for k in range(self.rank, -(-n_samples // B), self.world):
            rows = []
            for j in range(k * B, min((k + 1) * B, n_samples)):
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + HELD_OUT + j)
                ids, types, lengths, nsp, special = self._rows(g, 1)
                rows.append((ids, types, lengths, nsp, self._host_mask(g, ids, special)))
            ids, types, lengths, nsp, labels = (torch.cat(parts).numpy() for parts in zip(*rows))
            yield collate(ids, types, lengths, nsp, labels=labels, pack=self.pack)

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])
