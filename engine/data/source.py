"""Batch sources of the pretraining loop: the prepared dataset (`CorpusSource`), or synthetic batches for tests and
benchmarks (`SyntheticSource`, engine/data/synthetic.py), chosen by `open_source`. Both follow `BatchSource`.

Order: engine/data/sampler.py (global micro batch k goes to rank k % world; exact resume from one integer), or for
a weighted blend of datasets (`--data 0.7:A 0.3:B`) engine/data/blend.py's BlendSampler (same contract).
CorpusSource builds the samples of --objective (train / held-out split by document hash): NSP or SOP pairs from the
C++ sample map (engine/data/sample_map.py), or full MLM-only sequences (engine/data/full_sentences.py); masks them with
BERT's 80/10/10 seeded by (seed, epoch, sample id) — or leaves them unmasked with a `mask_seed` from (seed, epoch,
global micro-batch index) for --masking device — and lays them out (engine/data/batch.py). Training batches carry
per-sample dropout ids from (seed, the sample's epoch, sample id): `sample_dropout_ids`.

The held-out set is a number of samples (--eval-samples): the first N of the held-out split, cut into micro batches
(the last may be short), global batch k on rank k % world, always masked on the host (seeded by sample), so any
--micro-batch, number of ranks or --masking scores the same masked samples: `held_out_batches`."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import torch

from bertforge.config.checks import flag
from bertforge.config.pretrain import PretrainConfig
from bertforge.data.batch import Batch
from bertforge.data.sampler import MicroBatchSampler
from bertforge.data.splitmix import derive_seed, derive_seeds, mask_seed, sample_dropout_ids
from bertforge.errors import ConfigError, DataError
from bertforge.log import get_logger

EVAL_EPOCH = 10 ** 6  # masks of held-out batches are seeded with this epoch: fixed across evaluations


class BatchSource(Protocol):
    """What the pretraining loop needs from a source of micro batches for one rank."""

    vocab_size: int
    tokenizer_dir: Path | None
    position: int  # micro batches this rank has taken

    @property
    def mask_token_id(self) -> int: ...

    @property
    def replacement_probs(self) -> np.ndarray: ...  # (V,) distribution of MLM random replacements

    def start(self) -> None: ...  # build or map what the batches need (collective under torch.distributed)

    def batch_at(self, position: int) -> Batch: ...  # pure: safe to build ahead in another thread

    def next_batch(self) -> Batch: ...

    def held_out_batches(self, n_samples: int) -> Iterator[Batch]: ...  # this rank's share of n samples (k % world)

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def open_source(cfg: PretrainConfig, rank: int, world: int) -> BatchSource:
    """The source `cfg` asks for: synthetic batches when --synthetic-vocab is set, else the prepared dataset.
    Synthetic batches are always shaped as sentence pairs; the objective only decides which labels the loop uses."""
    if cfg.data.synthetic_vocab:
        from bertforge.data.synthetic import SyntheticSource

        return SyntheticSource(cfg.data.synthetic_vocab, cfg.batch.max_seq_length, cfg.batch.micro_batch, rank,
                               world, seed=cfg.run.seed, mlm_probability=cfg.masking.mlm_probability,
                               mask=cfg.masking.masking == "host", pack=cfg.batch.pack)
    if not cfg.data.data_dir:
        raise ConfigError("pretrain needs --data DIR (a `bertforge prepare` output) or --synthetic-vocab V")
    return CorpusSource(cfg, rank, world)


class CorpusSource:
    """Micro batches of one rank from a prepared dataset (see the module docstring)."""

    def __init__(self, cfg: PretrainConfig, rank: int, world: int):
        from bertforge.data.blend import parse_blend
        from bertforge.data.cache import resolve_cache_dir
        from bertforge.data.indexed import IndexedDataset
        from bertforge.data.tokenizer import load_tokenizer, tokenizer_hash

        self.tokenizer = None
        expected_hash = None
        if cfg.data.tokenizer:
            self.tokenizer = load_tokenizer(cfg.data.tokenizer)
            expected_hash = tokenizer_hash(self.tokenizer)
        self.blend = parse_blend(cfg.data.data_dir)  # one entry of weight 1 for a plain folder
        # DataError (one line) when not a prepared dataset, a shard is damaged, or another tokenizer made it
        self.cache_dirs = [resolve_cache_dir(e.path, cfg.data.data_cache, cfg.run.output_dir) for e in self.blend]
        self.cache_dir = self.cache_dirs[0]
        self.datasets = [IndexedDataset(e.path, expected_hash, c) for e, c in zip(self.blend, self.cache_dirs)]
        self.data = info = self.datasets[0]
        for e, ds in zip(self.blend[1:], self.datasets[1:]):
            if ds.tokenizer_hash != info.tokenizer_hash:
                raise DataError(f"dataset was prepared with another tokenizer (hash {ds.tokenizer_hash}) than "
                                f"{self.blend[0].path} (hash {info.tokenizer_hash}): every dataset of a blend must "
                                f"be prepared with one tokenizer; prepare it again with that tokenizer",
                                str(Path(e.path) / "meta.json"))
        self.vocab_size = info.vocab_size
        if self.tokenizer is not None and self.tokenizer.get_vocab_size() != self.vocab_size:
            raise ConfigError(f"{cfg.data.tokenizer}: tokenizer has {self.tokenizer.get_vocab_size()} tokens, "
                              f"{cfg.data.data_dir} was prepared with {self.vocab_size}")
        self.tokenizer_dir = Path(cfg.data.tokenizer) if cfg.data.tokenizer else None
        self.cfg, self.rank, self.world = cfg, rank, world
        self.position = 0
        self.train = self.held_out = self.sampler = self.masker = self.collate = self.eval_collate = None
        self.held_outs: dict[str, object] = {}  # {dataset path: its held-out split}

    def start(self) -> None:
        """Build (one process per cache folder: bertforge.data.cache.build_once) or map the sample maps of every
        dataset of the blend; not collective."""
        from bertforge.data.pretraining import PretrainingCollator, PretrainingDataset

        c = self.cfg
        kw = dict(max_seq_length=c.batch.max_seq_length, seed=c.run.seed, eval_fraction=c.data.eval_fraction,
                  tokenizer=self.tokenizer)
        if c.objective.objective == "mlm":
            from bertforge.data.full_sentences import FullSentenceDataset as Dataset
        else:
            Dataset = PretrainingDataset
            kw.update(short_seq_prob=c.objective.short_seq_prob, pairing=c.objective.sentence_task)
        trains = []
        for entry, data, cache_dir in zip(self.blend, self.datasets, self.cache_dirs):
            trains.append(Dataset(data, split="train", cache_dir=cache_dir, **kw))  # one opened dataset, two splits
            self.held_outs[entry.path] = held = Dataset(data, split="eval", cache_dir=cache_dir, **kw)
            if len(held) == 0:
                raise ConfigError(f"{entry.path}: the held-out split gives no samples at "
                                  f"{flag('max_seq_length')} {c.batch.max_seq_length}; raise --eval-fraction "
                                  f"(now {c.data.eval_fraction})")
            if c.run.eval_samples > len(held) and self.rank == 0:
                get_logger(__name__).info(  # INFO: the default 640 exceeds small data sets' splits
                    f"{entry.path}: {flag('eval_samples')} {c.run.eval_samples} is more than its held-out split's "
                    f"{len(held)} samples; every evaluation scores all {len(held)}")
        B = c.batch.micro_batch
        if len(self.blend) == 1:
            self.train, self.held_out = trains[0], self.held_outs[self.blend[0].path]
            self.sampler = MicroBatchSampler(len(self.train), B, self.rank, self.world, seed=c.run.seed)
        else:
            from bertforge.data.blend import BlendedDataset, BlendSampler

            self.train = BlendedDataset(trains, [e.weight for e in self.blend])
            self.held_out = self.held_outs[self.blend[0].path]
            self.sampler = BlendSampler([len(t) for t in trains], [e.weight for e in self.blend], B, self.rank,
                                        self.world, seed=c.run.seed)
        if len(self.train) < B * self.world:
            raise ConfigError(f"{c.data.data_dir}: the training split gives {len(self.train)} samples at "
                              f"{flag('max_seq_length')} {c.batch.max_seq_length}, fewer than one round of micro "
                              f"batches (--micro-batch {B} x {self.world} ranks): prepare more text or lower "
                              f"--micro-batch")
        self.masker = self.train.masker(c.masking.mlm_probability, c.masking.random_replacement)
        layout = dict(pack=c.batch.pack, pad_id=self.train.special.pad_id)
        self.collate = PretrainingCollator(self.masker, self.train.continuation, c.masking.whole_word_masking,
                                           mask=c.masking.masking == "host", **layout)
        self.eval_collate = PretrainingCollator(self.masker, self.train.continuation, c.masking.whole_word_masking,
                                                mask=True, **layout)  # held-out masks keyed by sample, any --masking

    @property
    def mask_token_id(self) -> int:
        return self.masker.mask_token_id

    @property
    def replacement_probs(self) -> np.ndarray:  # (V,) corpus unigram (or uniform) over non-special tokens
        return self.masker.replacement_probs

    def _batch(self, dataset, indices: np.ndarray, epoch: int, global_index: int) -> Batch:
        return self.collate(dataset.__getitems__(indices), epoch=epoch,
                            mask_seed=mask_seed(self.cfg.run.seed, epoch, global_index))

    def next_batch(self) -> Batch:
        batch = self.batch_at(self.position)
        self.position += 1
        return batch

    def batch_at(self, position: int) -> Batch:
        """This rank's micro batch number `position` (pure: safe to build ahead in another thread)."""
        mb = self.sampler.indices(position)
        batch = self._batch(self.train, mb.indices, mb.epoch, mb.global_index)
        batch.dropout_ids = torch.from_numpy(sample_dropout_ids(self.cfg.run.seed, mb.epochs, mb.indices))
        return batch

    def held_out_batches(self, n_samples: int, dataset: str | None = None) -> Iterator[Batch]:
        """This rank's share of the first n_samples held-out samples (all of them if the split is smaller), in
        micro batches: global batch k holds samples [k B, min((k + 1) B, n)) and goes to rank k % world; masked on
        the host, seeded by (seed, EVAL_EPOCH, sample id). Every micro batch and rank count scores the same masked
        samples, once each; ranks may get one batch fewer than others, or none. A blend's datasets keep their own
        held-out splits: `dataset` (a path of `self.blend`) names one; None gives n_samples of each in turn."""
        names = [dataset] if dataset is not None else [e.path for e in self.blend]
        B = self.cfg.batch.micro_batch
        for name in names:
            held = self.held_outs[name]
            n = min(n_samples, len(held))
            for k in range(self.rank, -(-n // B), self.world):
                raw = held.__getitems__(np.arange(k * B, min((k + 1) * B, n)))
                yield self.eval_collate(raw, epoch=EVAL_EPOCH)

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])
