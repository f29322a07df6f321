"""Rule-based sentence splitting (no model download): a sentence ends at . ! ? (optionally followed by closing quotes
or brackets) when whitespace and an upper-case letter, digit or opening quote follow, except after a known
abbreviation, a single initial ("J. R. R.") or a number ("No. 5"). Paragraph breaks always end a sentence."""
from __future__ import annotations

import re

_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "vs", "etc", "e.g", "i.e", "cf", "al", "approx",
    "inc", "ltd", "co", "corp", "no", "nos", "vol", "pp", "fig", "gen", "col", "lt", "sgt", "capt", "gov", "sen",
    "rep", "rev", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "u.s", "u.k",
    "a.d", "b.c", "ca", "c", "est", "dept", "univ", "assn", "bros", "ave", "blvd", "rd", "e.v",
}
# candidate boundary: terminator(s), optional closers, whitespace, then a plausible sentence start
_BOUNDARY = re.compile(r"""([.!?]+)(["')\]’”]*)\s+(?=["'(\[“‘]?[A-Z0-9À-Ý])""")
_WORD_BEFORE = re.compile(r"([\w.]+)$")


def split_sentences(text: str) -> list[str]:
    """text (paragraphs separated by blank lines) -> list of sentences, whitespace-normalised, none empty."""
    out: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = " ".join(paragraph.split())
        if paragraph:
            out += _split_paragraph(paragraph)
    return out


def _split_paragraph(p: str) -> list[str]:
    sentences, start = [], 0
    for m in _BOUNDARY.finditer(p):
        if m.group(1) == "." and _is_abbreviation(p[start:m.start()]):
            continue
        end = m.end(2)
        sentences.append(p[start:end].strip())
        start = m.end()
    tail = p[start:].strip()
    if tail:
        sentences.append(tail)
    return [s for s in sentences if s]


def _is_abbreviation(before: str) -> bool:
    w = _WORD_BEFORE.search(before)
    if not w:
        return False
    word = w.group(1).lower().strip(".")
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()) or word.endswith(".") \
        or (len(word) <= 3 and "." in word)
