"""A few pretraining steps on a prepared dataset, in a process of its own (so a test can lower its open-file limit
or run it as another user): `python _train_steps.py DATA TOKENIZER RUN_DIR [--nofile N] [--user UID]`.

Builds the pretraining loop's CorpusSource (sample maps into its cache folder), trains a 2-layer encoder with
AdamW on 3 of its micro batches (plain torch: the data path is what is under test, not DeepSpeed), scores one
held-out batch and prints one JSON line: {"losses": [...], "eval_loss": x, "cache_dir": "...", "fds": n}."""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("tokenizer")
    ap.add_argument("run_dir")
    ap.add_argument("--nofile", type=int, default=0, help="soft limit of open files for this process")
    ap.add_argument("--user", type=int, default=-1, help="run as this uid/gid (needs root)")
    args = ap.parse_args()
    if args.nofile:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))
    import numpy.lib.format  # noqa: F401 - imported before dropping privileges (the interpreter may be private)
    import torch

    import bertforge.data.pretraining  # noqa: F401
    from bertforge.config import preset
    from bertforge.config.pretrain import PretrainConfig
    from bertforge.data.source import CorpusSource
    from bertforge.heads import BertForPreTraining
    from bertforge.training.trainer import model_inputs

    from bertforge.data.tokenizer import load_tokenizer

    torch.manual_seed(0)
    vocab = load_tokenizer(args.tokenizer).get_vocab_size()
    model = BertForPreTraining(preset("tiny", vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    # one step on random ids first: torch imports parts of itself lazily, before privileges are dropped
    ids = torch.randint(5, vocab, (2, 16))
    model(ids, mlm_labels=ids, next_sentence_label=torch.zeros(2, dtype=torch.long)).loss.backward()
    opt.step()
    opt.param_groups[0]["lr"] = 1e-3
    if args.user >= 0:  # from here on files are opened with that user's rights
        os.setgid(args.user)
        os.setuid(args.user)

    cfg = PretrainConfig.from_flat(data_dir=args.data, tokenizer=args.tokenizer, output_dir=args.run_dir,
                                   max_seq_length=64, micro_batch=8, global_batch=8, eval_fraction=0.1, seed=5)
    source = CorpusSource(cfg, 0, 1)
    source.start()
    losses = []
    for _ in range(3):
        loss = model(**model_inputs(source.next_batch(), False, torch.device("cpu"))).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    with torch.no_grad():
        eval_loss = float(model(**model_inputs(next(source.held_out_batches(8)), False, torch.device("cpu"))).loss)
    print(json.dumps({"losses": losses, "eval_loss": eval_loss, "cache_dir": str(source.cache_dir),
                      "fds": len(os.listdir("/proc/self/fd"))}))


if __name__ == "__main__":
    main()
