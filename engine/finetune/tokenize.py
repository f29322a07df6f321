"""The tokenizer of a checkpoint directory, through the data pipeline's loader (engine.data.tokenizer): its
`tokenizer.json` (fast Rust tokenizer with word ids and offsets), or BERT's WordPiece pipeline around `vocab.txt`.
Padding and truncation are off: the finetuning data code truncates and windows explicitly."""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from engine.cli import UserError


def load_tokenizer(directory: str | Path) -> Tokenizer:
    from engine.data.tokenizer import load_tokenizer as load

    tok = load(directory)
    tok.no_padding()
    tok.no_truncation()
    return tok


def special_ids(tok: Tokenizer) -> dict[str, int]:
    out = {}
    for name in ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"):
        i = tok.token_to_id(name)
        if i is None:
            raise UserError(f"tokenizer has no {name} token (not a BERT WordPiece vocabulary)")
        out[name] = i
    return out
