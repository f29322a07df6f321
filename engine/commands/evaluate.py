"""`bertforge evaluate MODEL_DIR LABELLED_FILE`: accuracy / macro-F1 / per-class scores / confusion matrix
(classification) or entity precision / recall / F1 overall and per type (NER); JSON with --out, predictions with
--predictions."""
from __future__ import annotations

import argparse
import dataclasses

from bertforge.commands.flags import given
from bertforge.commands.predict import add_inference_args
from bertforge.config.finetune import InferenceConfig


def run(args: argparse.Namespace) -> int:
    from bertforge.finetuning.predict import evaluate
    from bertforge import distributed as D

    evaluate(InferenceConfig(**given(args, [f.name for f in dataclasses.fields(InferenceConfig)])), echo=print)
    D.finish(0)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="score a finetuned model on a labelled file", description=__doc__,
                              argument_default=argparse.SUPPRESS)
    add_inference_args(p, skip=())
    p.set_defaults(func=run)
