"""`bertforge tokenizer train|info`: train a WordPiece vocabulary (vocab.txt + tokenizer.json) or describe one."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("tokenizer", help="train or inspect a WordPiece vocabulary")
    sub = p.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    t = sub.add_parser("train", help="train WordPiece on raw text files/folders (json, jsonl, txt, rst, .gz)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("inputs", nargs="+", help="corpus files or folders, or a data set name (wiki, linux-doc)")
    t.add_argument("--out", required=True, help="output folder (vocab.txt, tokenizer.json, tokenizer_config.json)")
    t.add_argument("--vocab-size", type=int, default=30522, help="tokens in the vocabulary, the 5 specials included")
    t.add_argument("--cased", action="store_true", help="keep case and accents (uncased, like BERT, without it)")
    t.add_argument("--min-frequency", type=int, default=2, help="pairs seen fewer times are never merged")
    t.set_defaults(func=_train)
    i = sub.add_parser("info", help="print size, special ids and hash of a tokenizer folder or vocab.txt")
    i.add_argument("path")
    i.set_defaults(func=_info)


def _train(args) -> int:
    from pathlib import Path

    from bertforge.data.fetch import resolve_inputs
    from bertforge.data.tokenizer import special_ids, tokenizer_hash, train_wordpiece

    from bertforge.progress import is_terminal

    # the tokenizers library draws its bar with blank lines when stderr is not a terminal: only on a terminal
    tok = train_wordpiece([Path(x) for x in resolve_inputs(args.inputs)], args.out,
                          args.vocab_size, lowercase=not args.cased, min_frequency=args.min_frequency,
                          show_progress=is_terminal())
    print(f"{args.out}: {tok.get_vocab_size()} tokens, hash {tokenizer_hash(tok)}, {special_ids(tok)}")
    return 0


def _info(args) -> int:
    from bertforge.data.tokenizer import decide_case, load_tokenizer, special_ids, tokenizer_hash

    tok = load_tokenizer(args.path)
    print(f"{args.path}: {tok.get_vocab_size()} tokens, {decide_case(args.path).describe()}, "
          f"hash {tokenizer_hash(tok)}, {special_ids(tok)}")
    return 0
