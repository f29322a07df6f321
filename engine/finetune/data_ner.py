"""Token-classification data: CoNLL-style reader, tag schemes, sub-word alignment and windows.

Input: `token<TAB>tag` or whitespace-separated columns (token first, tag last, as CoNLL-2003), a blank (or
whitespace-only) line between sentences, `-DOCSTART-` lines skipped; or JSONL `{"tokens": [...], "tags": [...]}`.
Tags in IOB1, IOB2 or BIOES are converted to IOB2 on reading: the model learns and predicts IOB2, the metric is
strict IOB2 (metrics.py), and `from_iob2` converts predictions back to the file's scheme for output.

Alignment: the label of a word goes to its first sub-word and the other sub-words are ignored in the loss (-100),
or (label_all_subwords) every sub-word gets the word's label with B-X -> I-X on continuations. Predictions are read
from first sub-words only, so each word gets exactly one tag.

Windows: a sentence longer than max_seq_length - 2 sub-words is split into overlapping windows of whole words; each word
is *owned* by exactly one window (labelled and predicted there) and the `stride` sub-words on either side are
context only. Nothing is cut: only a single word longer than a whole window loses its trailing sub-words (its
label sits on the first one)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer

from engine.config.finetune import TAG_SCHEMES
from engine.errors import ConfigError, DataError
from engine.finetune.data_classify import _lines, jsonl_objects, read_text
from engine.finetune.metrics import iob2_spans

_ALLOWED = {"iob1": "BIO", "iob2": "BIO", "bioes": "BIOES"}


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str] | None  # IOB2 after reading; None for unlabelled input
    source: str
    lines: list[int] = field(default_factory=list)  # 1-based line of each token (JSONL: the record's line)


def _check_tag(tag: str, scheme: str, path: Path, line: int) -> None:
    if tag == "O":
        return
    prefix, sep, etype = tag.partition("-")
    if not sep or not etype or prefix not in _ALLOWED[scheme]:
        raise DataError(f"tag {tag!r} is not a valid {scheme.upper()} tag (expected O or "
                        f"{'/'.join(_ALLOWED[scheme])}-TYPE; choose the scheme with --scheme)", str(path), line)


def to_iob2(tags: Sequence[str], scheme: str) -> list[str]:
    """IOB1 (I- starts an entity unless it continues one; B- only between adjacent same-type entities) or BIOES
    (S- single, E- end) -> IOB2."""
    out = []
    for i, tag in enumerate(tags):
        if tag == "O":
            out.append(tag)
            continue
        prefix, _, etype = tag.partition("-")
        if scheme == "iob1" and prefix == "I":
            prev = tags[i - 1] if i else "O"
            continues = prev != "O" and prev.partition("-")[2] == etype
            out.append(f"I-{etype}" if continues else f"B-{etype}")
        elif scheme == "bioes":
            out.append(f"B-{etype}" if prefix in ("B", "S") else f"I-{etype}")
        else:
            out.append(tag)
    return out


def from_iob2(tags: Sequence[str], scheme: str) -> list[str]:
    """IOB2 -> `scheme`, through the strict IOB2 entities (a stray I- becomes O in IOB1/BIOES output)."""
    if scheme == "iob2":
        return list(tags)
    out = ["O"] * len(tags)
    prev_end, prev_type = -1, None
    for start, end, etype in iob2_spans(tags):
        if scheme == "iob1":
            first = "B" if (start == prev_end and etype == prev_type) else "I"
            out[start] = f"{first}-{etype}"
            for k in range(start + 1, end):
                out[k] = f"I-{etype}"
        else:
            if end - start == 1:
                out[start] = f"S-{etype}"
            else:
                out[start], out[end - 1] = f"B-{etype}", f"E-{etype}"
                for k in range(start + 1, end - 1):
                    out[k] = f"I-{etype}"
        prev_end, prev_type = end, etype
    return out


def read_conll(path: str | Path, scheme: str = "iob2", labelled: bool = True, encoding: str = "utf-8"
               ) -> list[Sentence]:
    """Sentences of a CoNLL-style or JSONL file, tags converted to IOB2 (see the module docstring)."""
    if scheme not in TAG_SCHEMES:
        raise ConfigError(f"--scheme: unknown tag scheme {scheme!r}; choose one of {', '.join(TAG_SCHEMES)}")
    path = Path(path)
    text = read_text(path, encoding)
    if path.suffix.lower() in (".jsonl", ".json"):
        return _read_jsonl(path, text, scheme, labelled)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []

    def flush():
        if tokens:
            sentences.append(Sentence(list(tokens), to_iob2(tags, scheme) if labelled else None, str(path),
                                      list(lines)))
        tokens.clear(), tags.clear(), lines.clear()

    for lineno, line in enumerate(_lines(text), 1):
        stripped = line.strip()
        if not stripped:
            flush()
            continue
        if stripped.startswith("-DOCSTART-"):
            flush()
            continue
        parts = line.rstrip().split("\t") if "\t" in line.rstrip() else stripped.split()
        parts = [p.strip() for p in parts]
        if not parts[0]:
            raise DataError("empty token", str(path), lineno)
        if labelled:
            if len(parts) < 2 or not parts[-1]:
                raise DataError(f"missing tag for token {parts[0]!r} (expected 'token<TAB>tag' or 'token tag')",
                                str(path), lineno)
            _check_tag(parts[-1], scheme, path, lineno)
            tags.append(parts[-1])
        tokens.append(parts[0])
        lines.append(lineno)
    flush()
    if not sentences:
        raise DataError("no sentences (only blank or -DOCSTART- lines)", str(path))
    return sentences


def _read_jsonl(path: Path, text: str, scheme: str, labelled: bool) -> list[Sentence]:
    out = []
    for lineno, obj in jsonl_objects(path, text):
        tokens = obj.get("tokens")
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t for t in tokens):
            raise DataError('expected {"tokens": [non-empty strings], "tags": [...]}', str(path), lineno)
        tags = None
        if labelled:
            tags = obj.get("tags", obj.get("ner_tags"))
            if not isinstance(tags, list):
                raise DataError('no "tags" list', str(path), lineno)
            if len(tags) != len(tokens):
                raise DataError(f"{len(tokens)} tokens but {len(tags)} tags", str(path), lineno)
            for t in tags:
                _check_tag(str(t), scheme, path, lineno)
            tags = to_iob2([str(t) for t in tags], scheme)
        out.append(Sentence(tokens, tags, str(path), [lineno] * len(tokens)))
    if not out:
        raise DataError("no sentences", str(path))
    return out


def tag_vocab(train: Sequence[Sentence]) -> list[str]:
    """'O' then B-X, I-X for every type seen in training (I-X added even if unseen: continuations need it)."""
    types = sorted({t[2:] for s in train for t in s.tags if t != "O"})
    return ["O"] + [f"{p}-{t}" for t in types for p in "BI"]


def check_tags(sentences: Sequence[Sentence], labels: Sequence[str], split: str) -> None:
    """DataError at the first tag not in `labels` (`split` names the part in the message)."""
    known = set(labels)
    for s in sentences:
        for tag, line in zip(s.tags, s.lines):
            if tag not in known:
                raise DataError(f"{split} tag {tag!r} has an entity type that does not occur in the training data",
                                s.source, line)


def split_sentences(sentences: Sequence[Sentence], fractions: Sequence[float], seed: int) -> list[list[Sentence]]:
    """Deterministic shuffle by `seed`, then consecutive parts of the given fractions (e.g. 0.8, 0.1, 0.1)."""
    import random

    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    parts, start = [], 0
    for i, frac in enumerate(fractions):
        end = len(order) if i == len(fractions) - 1 and sum(fractions) >= 0.999 else start + round(frac * len(order))
        parts.append([sentences[j] for j in order[start:end]])
        start = end
    return parts


@dataclass
class Window:
    sentence: int
    """Index of the sentence in the encoded list."""
    input_ids: list[int]
    labels: list[int] | None
    """Per token: a label id, or -100 (special tokens, ignored sub-words, context words owned by another window)."""
    word_index: list[int]
    """Per token: the word it predicts (first sub-word of a word this window owns), else -1."""


def _word_pieces(tok: Tokenizer, words: Sequence[str], unk_id: int, budget: int) -> list[list[int]]:
    enc = tok.encode(list(words), is_pretokenized=True, add_special_tokens=False)
    pieces: list[list[int]] = [[] for _ in words]
    for tid, wid in zip(enc.ids, enc.word_ids):
        if wid is not None:
            pieces[wid].append(tid)
    return [(p or [unk_id])[:budget] for p in pieces]  # a word the tokenizer drops still gets one token


def _windows(lengths: Sequence[int], budget: int, stride: int) -> list[tuple[int, int, int, int]]:
    """(start, end, own_start, own_end) word ranges: sum(lengths[start:end]) <= budget; owned ranges partition
    the sentence; up to `stride` sub-words of context on each side of the owned range."""
    n = len(lengths)
    if sum(lengths) <= budget:
        return [(0, n, 0, n)]
    stride = min(stride, budget // 4)
    out, start, own_start = [], 0, 0
    while True:
        end, used = start, 0
        while end < n and used + lengths[end] <= budget:
            used += lengths[end]
            end += 1
        if end == n:
            out.append((start, n, own_start, n))
            return out
        own_end, right = end, 0  # leave up to `stride` sub-words of right context, owning at least one word
        while own_end - 1 > own_start and right + lengths[own_end - 1] <= stride:
            own_end -= 1
            right += lengths[own_end]
        out.append((start, end, own_start, own_end))
        own_start = start = own_end
        left = 0
        while (start > 0 and left + lengths[start - 1] <= stride
               and left + lengths[start - 1] + lengths[own_start] <= budget):
            start -= 1
            left += lengths[start]


def encode(tok: Tokenizer, sentences: Sequence[Sentence], max_seq_length: int,
           label2id: dict[str, int] | None = None, label_all_subwords: bool = False, stride: int = 32
           ) -> list[Window]:
    """Windows of [CLS] sub-words [SEP] (at most max_seq_length tokens) covering every word of every sentence;
    labels are None when `label2id` is None or a sentence is unlabelled."""
    if max_seq_length < 4:
        raise ConfigError(f"--max-seq-length must be at least 4, got {max_seq_length}")
    cls_id, sep_id, unk_id = (tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[UNK]"))
    budget = max_seq_length - 2
    out: list[Window] = []
    for si, sent in enumerate(sentences):
        pieces = _word_pieces(tok, sent.tokens, unk_id, budget)
        for start, end, own_start, own_end in _windows([len(p) for p in pieces], budget, stride):
            ids, labels, words = [cls_id], [-100], [-1]
            for w in range(start, end):
                owned = own_start <= w < own_end
                for k, tid in enumerate(pieces[w]):
                    ids.append(tid)
                    words.append(w if owned and k == 0 else -1)
                    if label2id is None or sent.tags is None or not owned:
                        labels.append(-100)
                    elif k == 0:
                        labels.append(label2id[sent.tags[w]])
                    elif label_all_subwords:
                        tag = sent.tags[w]
                        labels.append(label2id["I-" + tag[2:] if tag.startswith("B-") else tag])
                    else:
                        labels.append(-100)
            ids.append(sep_id), labels.append(-100), words.append(-1)
            out.append(Window(si, ids, labels if label2id is not None and sent.tags is not None else None, words))
    return out


def words_from_windows(windows: Sequence[Window], predictions: Sequence[Sequence[int]], sentences: Sequence[Sentence],
                       id2label: Sequence[str]) -> list[list[str]]:
    """Per-token predicted label ids of each window -> one IOB2 tag per word of each sentence."""
    out: list[list[str | None]] = [[None] * len(s.tokens) for s in sentences]
    for win, pred in zip(windows, predictions):
        for pos, w in enumerate(win.word_index):
            if w >= 0:
                out[win.sentence][w] = id2label[int(pred[pos])]
    for si, tags in enumerate(out):
        if any(t is None for t in tags):  # impossible by construction of the windows; guard the invariant
            raise RuntimeError(f"sentence {si}: a word received no prediction")
    return out  # type: ignore[return-value]
