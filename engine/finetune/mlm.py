"""Domain-adaptive MLM (placeholder while the masking module lands)."""
from __future__ import annotations


def add_args(p) -> None:
    p.add_argument("--out", required=True)


def run_from_args(args) -> int:
    from engine.cli import UserError

    raise UserError("finetune mlm: not built yet")
