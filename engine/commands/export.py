"""`bertforge export CHECKPOINT OUT`: a training checkpoint (a step_N directory, or a run directory = its latest)
to a Hugging Face directory (config.json, model.safetensors, tokenizer files), or with --fp32 to one consolidated
fp32 file gathered from the ZeRO shards (.safetensors or .pt by OUT's suffix)."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a checkpoint to Hugging Face format or one consolidated fp32 file",
                              description=__doc__)
    p.add_argument("checkpoint", help="checkpoint directory (…/checkpoints/step_N) or run directory (latest)")
    p.add_argument("out", help="output directory (HF) or file (--fp32)")
    p.add_argument("--fp32", action="store_true", help="write one consolidated fp32 state dict file instead")
    p.add_argument("--tokenizer", default=None, help="tokenizer directory to copy (default: the training data's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bertforge.io import check_folder
    from bertforge.training.weights import export_checkpoint, export_fp32, resolve_checkpoint

    check_folder(args.checkpoint, "CHECKPOINT", "a checkpoint folder (RUN/checkpoints/step_N) or a run folder")
    ckpt = resolve_checkpoint(args.checkpoint, verify=True)  # a damaged newest checkpoint: the previous one
    if args.fp32:
        out = export_fp32(ckpt, args.out)
    else:
        out = export_checkpoint(ckpt, args.out, tokenizer_dir=args.tokenizer)
    print(f"exported {ckpt} -> {out}")
    return 0
