"""Low-learning-rate finetuning: sequence classification, token classification (NER) and domain-adaptive MLM.

Modules: tokenize (tokenizer of a checkpoint), data_classify (CSV/TSV/JSONL), data_ner (CoNLL, tag schemes,
sub-word alignment, windows), metrics (our own accuracy / F1 / entity F1), tasks (what a task trains and scores),
trainer (the low-LR loop, seeds, best checkpoint), mlm (domain-adaptive MLM), predict (inference on a finetuned
model directory)."""
