"""Low-learning-rate finetuning: sequence classification, token classification (entities or any per-word tag) and
domain-adaptive MLM, on the DeepSpeed engine that pretraining uses.

Modules: reading (files as streams of numbered lines), data_classify (CSV/TSV/JSONL, stratified split), data_ner
(CoNLL, tag schemes and their rules, stratified split, sub-word alignment, windows), metrics (our own accuracy / F1 /
entity F1 / confusion / collapse, report), tasks (what a task trains and scores), mlm (domain-adaptive MLM task),
evaluation (sharded over ranks), trainer (the low-LR DeepSpeed loop of one seed, checkpoints, best state), run (one
run per task from its config: data, seeds, resume, summary), predict (streamed, sharded inference and scoring),
progress (a bar on a terminal, plain lines in a log). Settings are engine/config/finetune.py; the command modules
only parse flags into those configs."""
