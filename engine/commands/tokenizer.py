"""`bertforge tokenizer train|info`: train a WordPiece vocabulary (vocab.txt + tokenizer.json) or describe one."""
from __future__ import annotations

import argparse

from bertforge.commands.flags import add_config_flags, print_config, with_config_file
from bertforge.errors import ConfigError

TRAIN_DEFAULTS = {"vocab_size": 30522, "cased": False, "min_frequency": 2}


def register(subparsers) -> None:
    p = subparsers.add_parser("tokenizer", help="train or inspect a WordPiece vocabulary")
    sub = p.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    t = sub.add_parser("train", help="train WordPiece on raw text files/folders (json, jsonl, txt, rst, .gz)",
                       usage="bertforge tokenizer train INPUTS... --out DIR [options]  (or --config FILE)",
                       argument_default=argparse.SUPPRESS)
    # INPUTS and --out are required, on the command line or in the --config file
    t.add_argument("inputs", nargs="*", help="corpus files or folders, or a data set name (wiki, linux-doc)")
    t.add_argument("--out", help="output folder (vocab.txt, tokenizer.json, tokenizer_config.json; required)")
    t.add_argument("--vocab-size", type=int, help="tokens in the vocabulary, the 5 specials included "
                                                   f"(default: {TRAIN_DEFAULTS['vocab_size']})")
    t.add_argument("--cased", action="store_true", help="keep case and accents (uncased, like BERT, without it)")
    t.add_argument("--min-frequency", type=int, help="pairs seen fewer times are never merged (default: "
                                                      f"{TRAIN_DEFAULTS['min_frequency']})")
    add_config_flags(t)
    t.set_defaults(func=_train)
    i = sub.add_parser("info", help="print size, special ids and hash of a tokenizer folder or vocab.txt")
    i.add_argument("path")
    i.set_defaults(func=_info)


def _train(args) -> int:
    if "inputs" in args and not args.inputs:
        del args.inputs  # nargs="*" stores [] when none are given: the --config file may name them
    settings, _ = with_config_file(args, "tokenizer train", ["inputs", "out", *TRAIN_DEFAULTS])
    settings = {**TRAIN_DEFAULTS, **settings}
    missing = [name for name, key in (("INPUTS", "inputs"), ("--out", "out")) if not settings.get(key)]
    if missing:
        raise ConfigError(f"{', '.join(missing)} required (on the command line or in --config)")
    settings["inputs"] = list(settings["inputs"])
    if getattr(args, "print_config", False):
        return print_config(settings)
    from pathlib import Path

    from bertforge.data.fetch import resolve_inputs
    from bertforge.data.tokenizer import special_ids, tokenizer_hash, train_wordpiece

    from bertforge.progress import is_terminal

    # the tokenizers library draws its bar with blank lines when stderr is not a terminal: only on a terminal
    tok = train_wordpiece([Path(x) for x in resolve_inputs(settings["inputs"])], settings["out"],
                          settings["vocab_size"], lowercase=not settings["cased"],
                          min_frequency=settings["min_frequency"], show_progress=is_terminal())
    print(f"{settings['out']}: {tok.get_vocab_size()} tokens, hash {tokenizer_hash(tok)}, {special_ids(tok)}")
    return 0


def _info(args) -> int:
    from bertforge.data.tokenizer import decide_case, load_tokenizer, special_ids, tokenizer_hash

    tok = load_tokenizer(args.path)
    print(f"{args.path}: {tok.get_vocab_size()} tokens, {decide_case(args.path).describe()}, "
          f"hash {tokenizer_hash(tok)}, {special_ids(tok)}")
    return 0
