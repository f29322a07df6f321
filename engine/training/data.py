"""The default batch source of `bertforge pretrain`: the prepared dataset in --data (engine/data/), or synthetic
batches when BERTFORGE_SYNTHETIC_VOCAB is set (`--synthetic-vocab`). See sources.py for the source protocol."""
from __future__ import annotations

import os

from engine.training.config import TrainConfig
from engine.training.sources import SyntheticSource


def open_source(cfg: TrainConfig, rank: int, world: int):
    synthetic = os.environ.get("BERTFORGE_SYNTHETIC_VOCAB")
    if synthetic:
        return SyntheticSource(int(synthetic), cfg.seq_len, cfg.micro_batch, rank, world, seed=cfg.seed,
                               mlm_probability=cfg.mlm_probability, mask=cfg.masking == "host")
    from engine.training.corpus import CorpusSource

    return CorpusSource(cfg, rank, world)
