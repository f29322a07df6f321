"""Low-learning-rate finetuning: sequence classification, token classification (NER) and domain-adaptive MLM.

Modules: data_classify (CSV/TSV/JSONL), data_ner (CoNLL, tag schemes, sub-word alignment, windows), metrics (our
own accuracy / F1 / entity F1, report), tasks (what a task trains and scores), trainer (the low-LR loop of one seed,
best checkpoint), mlm (domain-adaptive MLM task), run (one run per task from its config: data, seeds, summary),
predict (inference and scoring with a finetuned model directory). Settings are engine/config/finetune.py; the
command modules only parse flags into those configs."""
