"""Pretraining batches from a prepared dataset (`bertforge prepare` output), for the loop's source protocol
(sources.py). NSP pairs come from the data pipeline's sample map (engine/data/sample_map.py, train / held-out split
by document hash); this module orders, masks and collates them.

PROVISIONAL: a thin adapter written while engine/data's loader (masking kernel, collator, distributed sampler) was
not yet available; it should delegate to `engine.data` once that lands (same protocol, same keys).

Order: each epoch is a seeded permutation of the train samples; global micro batch k = samples [kB, (k+1)B) of that
order, served to rank k % world. Masking (BERT's 15% with 80/10/10) is seeded by (seed, epoch, sample), so it is
dynamic across epochs, identical for any number of ranks and exactly reproducible after a resume."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.config import ConfigError
from engine.training.config import TrainConfig

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4  # engine/data/tokenizer.py's special-token ids
N_SPECIAL = 5


class CorpusSource:
    def __init__(self, cfg: TrainConfig, rank: int, world: int):
        from engine.data.indexed import IndexedDataset

        self.ds = IndexedDataset(cfg.data_dir)  # DataError (one line) when not a prepared dataset
        self.vocab_size = self.ds.vocab_size
        self.tokenizer_dir = None
        if cfg.tokenizer:
            from engine.data.tokenizer import load_tokenizer, tokenizer_hash

            tok = load_tokenizer(cfg.tokenizer)
            if tokenizer_hash(tok) != self.ds.tokenizer_hash or tok.get_vocab_size() != self.vocab_size:
                raise ConfigError(f"{cfg.tokenizer}: tokenizer ({tok.get_vocab_size()} tokens) is not the one "
                                  f"{cfg.data_dir} was prepared with ({self.vocab_size} tokens)")
            self.tokenizer_dir = Path(cfg.tokenizer)
        self.cfg, self.rank, self.world = cfg, rank, world
        self.B, self.S, self.p = cfg.micro_batch, cfg.seq_len, cfg.mlm_probability
        self.position = 0
        self.train = self.held_out = None
        self._perm_epoch, self._perm = -1, None

    def start(self) -> None:
        """Build (rank 0) or map the sample maps; collective under torch.distributed."""
        from engine.data.sample_map import cached_sample_map

        kw = dict(eval_fraction=self.cfg.eval_fraction, seed=self.cfg.seed, max_seq_len=self.S)
        self.train, _ = cached_sample_map(self.ds, "train", **kw)
        self.held_out, _ = cached_sample_map(self.ds, "eval", **kw)
        if len(self.train) < self.B * self.world:
            raise ConfigError(f"{self.cfg.data_dir}: only {len(self.train)} training samples at --seq-len {self.S}")
        if len(self.held_out) == 0:
            raise ConfigError(f"{self.cfg.data_dir}: no held-out samples; raise --eval-fraction")

    # ---- one sample ----------------------------------------------------------------------------------------------
    def _sample(self, row: np.ndarray, rng: np.random.Generator):
        a = np.asarray(self.ds.tokens(int(row[0]), int(row[1])), dtype=np.int64)
        b = np.asarray(self.ds.tokens(int(row[2]), int(row[3])), dtype=np.int64)
        while len(a) + len(b) > self.S - 3:  # the map respects the length; truncate defensively (longer side)
            if len(a) >= len(b):
                a = a[:-1]
            else:
                b = b[:-1]
        ids = np.concatenate([[CLS], a, [SEP], b, [SEP]])
        types = np.concatenate([np.zeros(len(a) + 2, np.int64), np.ones(len(b) + 1, np.int64)])
        candidates = np.concatenate([np.arange(1, len(a) + 1), np.arange(len(a) + 2, len(a) + 2 + len(b))])
        n_mask = max(1, int(round(self.p * len(candidates))))
        chosen = np.sort(rng.choice(candidates, size=min(n_mask, len(candidates)), replace=False))
        labels = ids[chosen].copy()
        r = rng.random(len(chosen))
        ids[chosen[r < 0.8]] = MASK
        rand = chosen[(r >= 0.8) & (r < 0.9)]
        ids[rand] = rng.integers(N_SPECIAL, self.vocab_size, len(rand))
        return ids, types, chosen, labels, int(row[4])

    def _collate(self, rows: list[np.ndarray], rngs: list[np.random.Generator]) -> dict:
        B, S = len(rows), self.S
        ids = torch.zeros((B, S), dtype=torch.long)
        types = torch.zeros((B, S), dtype=torch.long)
        mask = torch.zeros((B, S), dtype=torch.long)
        positions, labels, nsp, lengths = [], [], [], []
        for b, (row, rng) in enumerate(zip(rows, rngs)):
            i, t, chosen, lab, is_random = self._sample(row, rng)
            n = len(i)
            ids[b, :n], types[b, :n], mask[b, :n] = torch.from_numpy(i), torch.from_numpy(t), 1
            positions.append(torch.from_numpy(chosen + b * S))
            labels.append(torch.from_numpy(lab))
            nsp.append(is_random)
            lengths.append(n)
        masked = torch.cat(positions)
        lengths_t = torch.tensor(lengths)
        cu = torch.zeros(B + 1, dtype=torch.int32)
        cu[1:] = torch.cumsum(lengths_t, 0)
        real = mask.flatten().bool()
        flat_index = torch.full((B * S,), -1, dtype=torch.long)
        flat_index[real] = torch.arange(int(real.sum()))
        return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "masked_positions": masked,
                "mlm_labels": torch.cat(labels), "next_sentence_label": torch.tensor(nsp, dtype=torch.long),
                # unpadded view of the same batch
                "cu_seqlens": cu, "max_seqlen": int(lengths_t.max()),
                "unpadded_masked_positions": flat_index[masked]}

    # ---- the protocol --------------------------------------------------------------------------------------------
    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.cfg.seed, epoch, 7]).permutation(len(self.train))
            self._perm_epoch = epoch
        return self._perm

    def next_batch(self) -> dict:
        k = self.position * self.world + self.rank
        self.position += 1
        n = len(self.train)
        rows, rngs = [], []
        for i in range(k * self.B, (k + 1) * self.B):
            epoch, j = divmod(i, n)
            sample = int(self._order(epoch)[j])
            rows.append(self.train[sample])
            rngs.append(np.random.default_rng([self.cfg.seed, epoch, sample, 1]))
        return _unpadded_inputs(self._collate(rows, rngs))

    def eval_batches(self, n_batches: int):
        n = len(self.held_out)
        for k in range(n_batches):
            start = (k * self.world + self.rank) * self.B
            idx = [(start + j) % n for j in range(self.B)]
            rngs = [np.random.default_rng([self.cfg.seed, 10 ** 9, i, 2]) for i in idx]
            yield _unpadded_inputs(self._collate([self.held_out[i] for i in idx], rngs))

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])


def _unpadded_inputs(batch: dict) -> dict:
    """Add the flat (total,) token tensors of the unpadded layout."""
    real = batch["attention_mask"].flatten().bool()
    batch = dict(batch)
    batch["unpadded"] = {"input_ids": batch["input_ids"].flatten()[real],
                         "token_type_ids": batch["token_type_ids"].flatten()[real]}
    return batch
