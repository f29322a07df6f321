"""`bertforge predict MODEL_DIR INPUT --out OUT.jsonl`: labels and probabilities (classification) or tags and entity
spans (token classification; entity tags are valid: a stray I-X of the model is answered as B-X, as conlleval reads
it, so tags and entities agree) for every input of a file, one JSON object per line in input order. The input is
streamed (any size, flat memory), batched by length, run on the GPU when there is one (--precision bf16 optional);
under `torchrun --nproc_per_node N -m bertforge.cli predict ...` the ranks share the file and still write one ordered
output."""
from __future__ import annotations

import argparse
import dataclasses

from bertforge.commands.flags import add_dataclass_flags, given
from bertforge.config.docs import field_docs
from bertforge.config.finetune import InferenceConfig

POSITIONAL = ("model", "input")


def add_inference_args(p: argparse.ArgumentParser, skip: tuple[str, ...]) -> None:
    """MODEL_DIR and INPUT, then one flag per other InferenceConfig field not in `skip`."""
    docs = field_docs(InferenceConfig)
    for name in POSITIONAL:
        p.add_argument(name, help=docs[name])
    add_dataclass_flags(p, InferenceConfig, skip=POSITIONAL + skip)


def run(args: argparse.Namespace) -> int:
    from bertforge.finetuning.predict import predict
    from bertforge import distributed as D

    predict(InferenceConfig(**given(args, [f.name for f in dataclasses.fields(InferenceConfig)])), echo=print)
    D.finish(0)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="run a finetuned model over a file, JSONL out", description=__doc__,
                              argument_default=argparse.SUPPRESS)
    add_inference_args(p, skip=("predictions", "label_column"))
    p.set_defaults(func=run)
