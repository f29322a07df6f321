"""Typed configuration, the bottom layer of the engine (imports only bertforge.errors and bertforge.io):

- model.py     `ModelConfig` (Hugging Face BertConfig field names) and the presets tiny / minilm-l6 / bert-base /
               bert-large
- pretrain.py  `PretrainConfig`: `bertforge pretrain`'s settings in sections (data, model, batch, optim, masking,
               parallel, run)
- finetune.py  the finetuning settings shared by classify / ner / mlm
- recipe.py    the finetuning recipe chosen from the training set (size, label distribution): lecture or few-sample
- docs.py      the docstring under each field, for --help and the README's glossary
- names.py     the one name -> field mapping of flags, config files (--config, RUN/config.json) and the Python API
"""
from bertforge.config.model import (HIDDEN_ACTS, KERNEL_BACKENDS, PRESETS, ModelConfig, bert_base, bert_large,
                                 minilm_l6, preset, tiny)

__all__ = ["HIDDEN_ACTS", "KERNEL_BACKENDS", "PRESETS", "ModelConfig", "bert_base", "bert_large", "minilm_l6",
           "preset", "tiny"]
