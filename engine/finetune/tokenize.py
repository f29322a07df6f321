"""The tokenizer of a checkpoint directory: its `tokenizer.json` (fast Rust tokenizer, word ids and offsets), or a
WordPiece tokenizer built from its `vocab.txt`. Padding and truncation baked into tokenizer.json are switched off:
the finetuning data code truncates and windows explicitly."""
from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer

from engine.cli import UserError


def load_tokenizer(directory: str | Path) -> Tokenizer:
    directory = Path(directory)
    if (directory / "tokenizer.json").is_file():
        tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    elif (directory / "vocab.txt").is_file():
        from tokenizers.implementations import BertWordPieceTokenizer

        lowercase = True
        cfg = directory / "tokenizer_config.json"
        if cfg.is_file():
            lowercase = bool(json.loads(cfg.read_text(encoding="utf-8")).get("do_lower_case", True))
        tok = BertWordPieceTokenizer(str(directory / "vocab.txt"), lowercase=lowercase)._tokenizer
    else:
        raise UserError(f"{directory}: no tokenizer (expected tokenizer.json or vocab.txt)")
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
