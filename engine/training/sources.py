"""Batch sources for the pretraining loop. A source serves one rank:
  next_batch() -> dict         the rank's next training micro batch (collator keys, see below)
  eval_batches(n) -> iterator  n held-out micro batches, the same on every call (fixed masking)
  state_dict() / load_state_dict(state)   the position in the stream, for exact resume
  vocab_size, tokenizer_dir, unigram (held-out label counts may be computed instead)
Micro batch k of the global order goes to rank k % world, so a global batch holds the same sequences whatever the
number of ranks — which is what makes 2 ranks x accumulation n equal 1 rank x accumulation 2n.

Batch keys (engine/data/loader.py's collator): padded input_ids, token_type_ids, attention_mask (B, S),
masked_positions (n,) flat into B*S; unpadded input_ids_unpad, token_type_ids_unpad, position_ids_unpad (total,),
cu_seqlens (B+1,), max_seqlen, masked_positions_unpad (n,) flat into total; mlm_labels (n,), next_sentence_label (B,)."""
from __future__ import annotations

import torch

from engine.padding import cu_seqlens_to_position_ids

MASK_ID, CLS_ID, SEP_ID, PAD_ID = 4, 2, 3, 0  # the WordPiece trainer's special-token order: [PAD] [UNK] [CLS] [SEP] [MASK]


class SyntheticSource:
    """Deterministic random NSP/MLM batches with a learnable structure (tokens follow a fixed random bigram table,
    B continues A for IsNext): for tests and benchmarks, no data needed."""

    def __init__(self, vocab_size: int, seq_len: int, micro_batch: int, rank: int = 0, world: int = 1, seed: int = 0,
                 mlm_probability: float = 0.15, mask: bool = True):
        self.vocab_size, self.seq_len, self.micro_batch, self.mask = vocab_size, seq_len, micro_batch, mask
        self.rank, self.world, self.seed, self.p = rank, world, seed, mlm_probability
        self.position = 0  # micro batches this rank has taken
        g = torch.Generator().manual_seed(seed + 7)
        self.next_token = torch.randint(5, vocab_size, (vocab_size, 4), generator=g)  # 4 likely successors
        self.tokenizer_dir = None

    mask_token_id = MASK_ID

    @property
    def replacement_probs(self):  # (V,) uniform over the non-special tokens 5..V-1 (for --masking device)
        from engine.data.masking import replacement_distribution

        return replacement_distribution(self.vocab_size, range(5))

    def _sequence(self, g: torch.Generator, n: int) -> torch.Tensor:
        out = torch.empty(n, dtype=torch.long)
        tok = int(torch.randint(5, self.vocab_size, (1,), generator=g))
        for i in range(n):
            out[i] = tok
            tok = int(self.next_token[tok, int(torch.randint(0, 4, (1,), generator=g))])
        return out

    def _batch(self, index: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        B, S = self.micro_batch, self.seq_len
        ids = torch.full((B, S), PAD_ID, dtype=torch.long)
        types = torch.zeros((B, S), dtype=torch.long)
        mask = torch.zeros((B, S), dtype=torch.long)
        nsp = torch.randint(0, 2, (B,), generator=g)
        for b in range(B):
            length = int(torch.randint(S // 2, S + 1, (1,), generator=g))
            a_len = (length - 3) // 2
            b_len = length - 3 - a_len
            a = self._sequence(g, a_len + b_len)
            second = a[a_len:] if nsp[b] == 0 else self._sequence(g, b_len)
            row = torch.cat([torch.tensor([CLS_ID]), a[:a_len], torch.tensor([SEP_ID]), second, torch.tensor([SEP_ID])])
            ids[b, :length], mask[b, :length] = row, 1
            types[b, a_len + 2:length] = 1
        special = (ids == CLS_ID) | (ids == SEP_ID) | (mask == 0)
        if not self.mask:  # --masking device: unmasked ids, special-token masks and a seed (device_masking.py)
            from engine.training.device_masking import mask_seed

            batch = with_unpadded_form({"input_ids": ids, "token_type_ids": types, "attention_mask": mask,
                                        "next_sentence_label": nsp})
            return dict(batch, special_tokens_mask=special, special_tokens_mask_unpad=special[mask.bool()],
                        mask_seed=mask_seed(self.seed, 0, index))
        chosen = (torch.rand((B, S), generator=g) < self.p) & ~special
        chosen[:, 1] |= ~chosen.any(1)  # at least one masked token per sequence
        flat = chosen.flatten().nonzero().flatten()
        labels = ids.flatten()[flat].clone()
        r = torch.rand(flat.shape, generator=g)
        ids.view(-1)[flat[r < 0.8]] = MASK_ID
        rand_rows = flat[(r >= 0.8) & (r < 0.9)]
        ids.view(-1)[rand_rows] = torch.randint(5, self.vocab_size, rand_rows.shape, generator=g)
        return with_unpadded_form({"input_ids": ids, "token_type_ids": types, "attention_mask": mask,
                                   "masked_positions": flat, "mlm_labels": labels, "next_sentence_label": nsp})

    def next_batch(self) -> dict:
        batch = self.batch_at(self.position)
        self.position += 1
        return batch

    def batch_at(self, position: int) -> dict:
        return self._batch(position * self.world + self.rank)

    def eval_batches(self, n: int):
        for k in range(n):
            yield self._batch(10 ** 12 + k * self.world + self.rank)  # far beyond any training index

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])


def with_unpadded_form(batch: dict) -> dict:
    """Add the collator's unpadded keys to a padded batch (prefix attention masks)."""
    mask = batch["attention_mask"].bool()
    lengths = mask.sum(1)
    extra = {}
    if "masked_positions" in batch:
        flat_to_unpadded = torch.full((mask.numel(),), -1, dtype=torch.long)
        flat_to_unpadded[mask.flatten()] = torch.arange(int(lengths.sum()))
        extra["masked_positions_unpad"] = flat_to_unpadded[batch["masked_positions"]]
    cu_seqlens = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    total = int(lengths.sum())
    return dict(batch, input_ids_unpad=batch["input_ids"][mask], token_type_ids_unpad=batch["token_type_ids"][mask],
                position_ids_unpad=cu_seqlens_to_position_ids(cu_seqlens, total), cu_seqlens=cu_seqlens,
                max_seqlen=int(lengths.max()), cls_positions_unpad=cu_seqlens[:-1].long(), num_tokens=total,
                packed=False, **extra)
