"""Corpus data pipeline: fetch real data sets, read raw text, train/load WordPiece, prepare a sharded memory-mapped
indexed dataset, build the NSP sample map (C++ with a numpy reference), mask dynamically, lay out batches and serve
them to the training loop.

Modules (one concern each): fetch, readers, sentences, tokenizer, prepare, indexed, sample_map, splitmix, masking,
packing, batch (the `Batch` and its layout), pretraining (dataset + collator), sampler (the even distributed order),
source (`BatchSource`, `CorpusSource`, `open_source`), synthetic, prefetch."""
