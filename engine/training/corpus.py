"""Pretraining batches from a prepared dataset (`bertforge prepare` output) for the loop's source protocol
(sources.py), built on the data pipeline: NSP pairs from the C++ sample map (train / held-out split by document
hash), dynamic 80/10/10 masking seeded by (seed, epoch, sample id), and the collator's padded + unpadded forms
(engine/data/loader.py).

Order: each epoch is a seeded permutation of the train samples; global micro batch k = samples [kB, (k+1)B) of that
order, served to rank k % world. A global batch therefore holds the same micro batches whatever the number of
ranks (so 2 ranks x accumulation n equal 1 rank x accumulation 2n, loss for loss), every rank takes exactly one
micro batch per round (none runs out first), and the position is one integer (exact resume). `batch_at(position)`
is a pure function of the position, so a prefetching thread (prefetch.py) can build batches ahead.

With --masking device the collator leaves the ids unmasked and each batch carries `mask_seed` (from the run seed,
epoch and global micro-batch index) for engine/training/device_masking.py."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from engine.config import ConfigError
from engine.training.config import TrainConfig

EVAL_EPOCH = 10 ** 6  # masks of held-out batches are seeded with this epoch: fixed across evaluations


class CorpusSource:
    def __init__(self, cfg: TrainConfig, rank: int, world: int):
        from engine.data.indexed import IndexedDataset
        from engine.data.tokenizer import load_tokenizer, tokenizer_hash

        self.tokenizer = None
        expected_hash = None
        if cfg.tokenizer:
            self.tokenizer = load_tokenizer(cfg.tokenizer)
            expected_hash = tokenizer_hash(self.tokenizer)
        elif cfg.whole_word_masking:
            raise ConfigError("--whole-word-masking needs --tokenizer (to know the '##' continuation pieces)")
        # DataError (one line) when not a prepared dataset or prepared with another tokenizer
        info = IndexedDataset(cfg.data_dir, expected_hash)
        self.vocab_size = info.vocab_size
        if self.tokenizer is not None and self.tokenizer.get_vocab_size() != self.vocab_size:
            raise ConfigError(f"{cfg.tokenizer}: tokenizer has {self.tokenizer.get_vocab_size()} tokens, "
                              f"{cfg.data_dir} was prepared with {self.vocab_size}")
        self.tokenizer_dir = Path(cfg.tokenizer) if cfg.tokenizer else None
        self.cfg, self.rank, self.world, self.B = cfg, rank, world, cfg.micro_batch
        self.position = 0
        self.train = self.held_out = None
        self._perm_epoch, self._perm = -1, None
        self._lock = threading.Lock()
        self.masker = None

    def start(self) -> None:
        """Build (rank 0) or map the sample maps; collective under torch.distributed."""
        from engine.data.loader import PretrainingCollator, PretrainingDataset

        c = self.cfg
        kw = dict(max_seq_len=c.seq_len, seed=c.seed, eval_fraction=c.eval_fraction, tokenizer=self.tokenizer)
        self.train = PretrainingDataset(c.data_dir, split="train", **kw)
        self.held_out = PretrainingDataset(c.data_dir, split="eval", **kw)
        if len(self.train) < self.B * self.world:
            raise ConfigError(f"{c.data_dir}: only {len(self.train)} training samples at --seq-len {c.seq_len}")
        if len(self.held_out) == 0:
            raise ConfigError(f"{c.data_dir}: no held-out samples; raise --eval-fraction")
        self.masker = self.train.masker(c.mlm_probability, c.random_replacement)
        self.collate = PretrainingCollator(self.masker, self.train.continuation, c.whole_word_masking, pack=c.pack,
                                           pad_id=self.train.special.pad_id, mask=c.masking == "host")

    @property
    def mask_token_id(self) -> int:  # for --masking device
        return self.masker.mask_token_id

    @property
    def replacement_probs(self) -> np.ndarray:  # (V,) corpus unigram (or uniform) over non-special tokens
        return self.masker.replacement_probs

    def _order(self, epoch: int) -> np.ndarray:
        with self._lock:
            if epoch != self._perm_epoch:
                self._perm = np.random.default_rng([self.cfg.seed, epoch, 7]).permutation(len(self.train))
                self._perm_epoch = epoch
            return self._perm

    def _batch(self, dataset, indices: np.ndarray, epoch: int, index: int) -> dict:
        batch = self.collate(dataset.__getitems__(indices), epoch=epoch)
        if self.cfg.masking == "device":
            from engine.training.device_masking import mask_seed

            batch["mask_seed"] = mask_seed(self.cfg.seed, epoch, index)
        return batch

    def next_batch(self) -> dict:
        batch = self.batch_at(self.position)
        self.position += 1
        return batch

    def batch_at(self, position: int) -> dict:
        """This rank's micro batch number `position` (pure: safe to build ahead in another thread)."""
        k = position * self.world + self.rank
        n = len(self.train)
        epoch, first = divmod(k * self.B, n)
        order = self._order(epoch)
        if first + self.B <= n:
            indices = order[first:first + self.B]
        else:  # the micro batch wraps into the next epoch's permutation
            indices = np.concatenate([order[first:], self._order(epoch + 1)[: first + self.B - n]])
        return self._batch(self.train, indices, epoch, k)

    def eval_batches(self, n_batches: int):
        """At most n_batches held-out micro batches per rank, capped so that no sample is scored twice (the same
        count on every rank; one batch, wrapping, if the split is smaller than a round of micro batches)."""
        n = len(self.held_out)
        n_batches = max(1, min(n_batches, n // (self.B * self.world)))
        for k in range(n_batches):
            start = (k * self.world + self.rank) * self.B
            index = k * self.world + self.rank
            yield self._batch(self.held_out, np.arange(start, start + self.B) % n, EVAL_EPOCH, index)

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])
