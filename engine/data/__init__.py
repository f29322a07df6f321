"""Corpus data pipeline: fetch real data sets, read raw text, train/load WordPiece, prepare a sharded memory-mapped
indexed dataset, build the NSP sample map (C++ with a numpy reference), mask dynamically, and load batches.

Modules (one concern each): fetch, readers, sentences, tokenizer, prepare, indexed, sample_map, masking, loader."""
