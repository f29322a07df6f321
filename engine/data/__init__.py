"""Corpus data pipeline: fetch real data sets, read raw text, train/load WordPiece, prepare a sharded memory-mapped
indexed dataset, build the NSP / SOP sample map or the MLM-only grouping (C++ with numpy references), mask
dynamically, lay out batches and serve them to the training loop.

Modules (one concern each): fetch, readers (streaming, pieces of files), sentences, tokenizer, prepare (plan, tasks,
parts), workers (the process pool that names a dead worker's task), indexed (shards, checks, the per-sentence
index), shards (token files mapped with descriptors closed, the C++ gather), cache (where derived files live, built
once per node), sample_map (NSP / SOP pairs), grouping (documents packed into full blocks), full_sentences (MLM-only
samples), splitmix, masking, packing, batch (the `Batch` and its layout), pretraining (dataset + collator), sampler
(the even distributed order), source (`BatchSource`, `CorpusSource`, `open_source`), synthetic, prefetch."""
