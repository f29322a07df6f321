"""Token-classification data: CoNLL-style reader (streamed: `iter_sentences`), tag schemes and their validity,
a stratified split, sub-word alignment and windows.

Input: `token<TAB>tag` or whitespace-separated columns (token first, tag last, as CoNLL-2003), a blank (or
whitespace-only) line between sentences, `-DOCSTART-` lines skipped; or JSONL `{"tokens": [...], "tags": [...]}`.

Schemes: entity tags in IOB1, IOB2 or BIOES are checked against the scheme's rules while reading (IOB2: an I-X
continues a B-X or I-X of the same type; BIOES: B-X / I-X are followed by I-X or E-X of the same type, E-X follows
one of them, S-X stands alone) and a violation is a DataError naming file, line and the scheme the file looks like
(an IOB1 file read as IOB2 would otherwise lose most of its gold entities to strict scoring without a word). Entity
tags are converted to IOB2 on reading: the model learns and predicts IOB2, the metric is strict IOB2 (metrics.py),
and `from_iob2` converts predictions back to the file's scheme for output. `plain` takes any per-word tag (part of
speech, chunks, ...) as it is: one class per distinct tag, scored per token.

Alignment: the label of a word goes to its first sub-word and the other sub-words are ignored in the loss (-100),
or (label_all_subwords) every sub-word gets the word's label (for entity schemes with B-X -> I-X on
continuations). Predictions are read from first sub-words only, so each word gets exactly one tag.

Windows: a sentence longer than max_seq_length - 2 sub-words is split into overlapping windows of whole words; each
word is *owned* by exactly one window (labelled and predicted there) and the `stride` sub-words on either side are
context only. Nothing is cut: only a single word longer than a whole window loses its trailing sub-words (its
label sits on the first one)."""
from __future__ import annotations

import json
import random
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from tokenizers import Tokenizer

from bertforge.config.checks import invalid_choice
from bertforge.config.finetune import TAG_SCHEMES
from bertforge.errors import ConfigError, DataError
from bertforge.finetuning.metrics import iob2_spans
from bertforge.finetuning.reading import LineReader, jsonl_objects, strip_ending
from bertforge.finetuning.splitting import split_counts

_ALLOWED = {"iob1": "BI", "iob2": "BI", "bioes": "BIES", "bilou": "BILU"}
_TO_BIOES = {"L": "E", "U": "S"}  # BILOU (spaCy) is BIOES with L- (last) for E- and U- (unit) for S-
_FROM_BIOES = {"E": "L", "S": "U"}
_SCHEME_HINTS = "iob1/iob2: B-, I-; bioes: B-, I-, E-, S-; bilou: B-, I-, L-, U-; plain: any tag"


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str] | None  # IOB2 (plain: as written) after reading; None for unlabelled input
    source: str
    lines: list[int] = field(default_factory=list)  # 1-based line of each token (JSONL: the record's line)


def _expected(scheme: str) -> str:
    return "O or " + " / ".join(f"{p}-TYPE" for p in _ALLOWED[scheme])


def _check_tag(tag: str, scheme: str, path: Path, line: int) -> None:
    """DataError for a tag that `scheme` cannot hold, with a hint naming only schemes that exist."""
    if scheme == "plain" or tag == "O":
        return
    prefix, sep, etype = tag.partition("-")
    if sep and etype and prefix in _ALLOWED[scheme]:
        return
    where = (str(path), line)
    if tag.lstrip("-").isdigit():
        raise DataError(f"tag {tag!r} is an integer id, not a tag name; give the names of the ids with "
                        f"--label-names (comma-separated, or a file of names / a datasets dataset_info.json)", *where)
    if tag in ("B", "I", "E", "S", "L", "U") or (sep and not etype and prefix in "BIESLU"):
        raise DataError(f"tag {tag!r} has no entity type (untyped B/I/O tags); entity schemes need TYPE in B-TYPE: "
                        f"rename the tags (e.g. B-ENT, I-ENT) to train them as one entity type", *where)
    if sep and etype and prefix in "BIESLU":
        fits = [s for s, allowed in _ALLOWED.items() if prefix in allowed and s != "iob1"]
        hint = f"this looks like {fits[-1].upper()}: pass --scheme {fits[-1]}"
    else:
        hint = "for per-word tags that are not entities (part of speech, chunks, ...) pass --scheme plain"
    raise DataError(f"tag {tag!r} is not a valid {scheme.upper()} tag (expected {_expected(scheme)}); {hint} "
                    f"(schemes: {_SCHEME_HINTS})", *where)


def _split(tag: str) -> tuple[str, str]:
    return ("O", "") if tag == "O" else (tag[0], tag[2:])


def _bilou_as_bioes(tags: Sequence[str]) -> list[str]:
    return [_TO_BIOES.get(t[0], t[0]) + t[1:] if t != "O" else t for t in tags]


def likely_scheme(tags: Sequence[str]) -> str:
    """The scheme a sentence's tags are valid in, guessed: bioes (E-/S- present), iob2 (every I-X continues X),
    else iob1."""
    if any(t[:2] in ("L-", "U-") for t in tags):
        return "bilou"
    if any(t[:2] in ("E-", "S-") for t in tags):
        return "bioes"
    return "iob2" if scheme_violation(tags, "iob2") is None else "iob1"


def scheme_violation(tags: Sequence[str], scheme: str) -> tuple[int, str] | None:
    """(index, reason) of the first tag that breaks `scheme`'s rules (see the module docstring), or None. IOB1 and
    plain have no sequence rules; BILOU has BIOES's (with L- for E- and U- for S-)."""
    if scheme == "bilou":
        mapped = _bilou_as_bioes(tags)
        bad = scheme_violation(mapped, "bioes")
        if bad is None:
            return None
        i, reason = bad
        for k in (i, i - 1):  # name the tags as written, and BILOU's prefixes
            if k >= 0:
                reason = reason.replace(repr(mapped[k]), repr(tags[k]))
        for old, new in (("BIOES", "BILOU"), ("E- or S-", "L- or U-"), ("B- or S-", "B- or U-"), (" or E-", " or L-")):
            reason = reason.replace(old, new)
        return i, reason
    if scheme == "iob2":
        for i, tag in enumerate(tags):
            prefix, etype = _split(tag)
            if prefix == "I":
                prev = _split(tags[i - 1]) if i else ("O", "")
                if prev[0] not in "BI" or prev[1] != etype:
                    where = "at the start of a sentence" if not i else f"after {tags[i - 1]!r}"
                    return i, f"{tag!r} {where} starts an entity, which IOB2 does not allow (entities start with B-)"
    elif scheme == "bioes":
        for i, tag in enumerate(tags):
            prefix, etype = _split(tag)
            prev = _split(tags[i - 1]) if i else ("O", "")
            opened = prev[0] in "BI"
            if prefix in ("I", "E") and not (opened and prev[1] == etype):
                where = "at the start of a sentence" if not i else f"after {tags[i - 1]!r}"
                return i, f"{tag!r} {where} continues no entity (BIOES entities start with B- or S-)"
            if opened and not (prefix in ("I", "E") and etype == prev[1]):
                return i, f"{tags[i - 1]!r} is not closed: BIOES needs I-{prev[1]} or E-{prev[1]} after it, got {tag!r}"
        if tags and _split(tags[-1])[0] in "BI" and tags[-1] != "O":
            return len(tags) - 1, f"{tags[-1]!r} ends the sentence unclosed (BIOES ends entities with E- or S-)"
    return None


def check_scheme(tags: Sequence[str], scheme: str, path: Path | str, lines: Sequence[int]) -> None:
    """DataError at the first tag that breaks `scheme`'s rules, naming file:line and the scheme the sentence looks
    like."""
    bad = scheme_violation(tags, scheme)
    if bad is None:
        return
    index, reason = bad
    guess = likely_scheme(tags)
    hint = (f"this looks like {guess.upper()}: pass --scheme {guess}" if guess != scheme
            else "fix the tag or choose the file's scheme with --scheme")
    raise DataError(f"tag {reason}; {hint}", str(path), lines[index])


def to_iob2(tags: Sequence[str], scheme: str) -> list[str]:
    """IOB1 (I- starts an entity unless it continues one; B- only between adjacent same-type entities), BIOES
    (S- single, E- end) or BILOU (U- unit, L- last) -> IOB2; IOB2 and plain tags are returned as they are."""
    if scheme == "bilou":
        tags, scheme = _bilou_as_bioes(tags), "bioes"
    out = []
    for i, tag in enumerate(tags):
        if tag == "O" or scheme == "plain":
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


def strict_iob2(tags: Sequence[str]) -> list[str]:
    """Valid IOB2 from a model's IOB2 tags, read as `entity_metrics` scores them (seqeval's strict IOB2 mode): a
    stray I-X (not after B-X or I-X) starts no entity and becomes O; every tag inside a strict entity is kept. So
    predict's tags, its entities and evaluate's counts are one reading of the model's output."""
    out = ["O"] * len(tags)
    for start, end, _ in iob2_spans(tags):
        out[start:end] = tags[start:end]
    return out


def from_iob2(tags: Sequence[str], scheme: str) -> list[str]:
    """IOB2 -> `scheme`, through the strict IOB2 entities (a stray I- becomes O in IOB1/BIOES output); plain tags
    are returned as they are."""
    if scheme in ("iob2", "plain"):
        return list(tags)
    if scheme == "bilou":
        return [_FROM_BIOES.get(t[0], t[0]) + t[1:] if t != "O" else t for t in from_iob2(tags, "bioes")]
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


def _sentence(tokens, tags, scheme, labelled, path, lines) -> Sentence:
    if labelled:
        check_scheme(tags, scheme, path, lines)
        tags = to_iob2(tags, scheme)
    return Sentence(list(tokens), list(tags) if labelled else None, str(path), list(lines))


def read_label_names(value: str) -> list[str]:
    """The names of integer tag ids (--label-names): comma-separated names, or a file holding them: one a line, a
    JSON list, or a datasets dataset_info.json (features.<ner_tags|tags>.feature.names). DataError / ConfigError
    naming the file or flag."""
    path = Path(value)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            try:
                obj = json.loads(text)
            except ValueError as exc:
                raise DataError(f"--label-names: not valid JSON ({exc})", str(path)) from None
            if isinstance(obj, dict):
                features = obj.get("features") or {}
                column = next((features[k] for k in ("ner_tags", "tags", "pos_tags") if k in features), {})
                obj = ((column.get("feature") or column) if isinstance(column, dict) else {}).get("names")
            if not isinstance(obj, list) or not all(isinstance(n, str) and n for n in obj):
                raise DataError("--label-names: expected a JSON list of tag names or a dataset_info.json with "
                                "features.ner_tags.feature.names", str(path))
            names = obj
        else:
            names = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        names = [n.strip() for n in value.split(",")]
        if "" in names:
            raise ConfigError(f"--label-names {value!r}: an empty name (give names separated by commas, or a file)")
    if len(set(names)) != len(names) or not names:
        raise ConfigError(f"--label-names {value!r}: names must be distinct and at least one")
    return names


def _named(tag, names: Sequence[str] | None, path: Path, line: int) -> str:
    """A tag as read (a name, or an integer id when `names` is given) -> its name."""
    if names is None:
        if isinstance(tag, int) and not isinstance(tag, bool):
            raise DataError(f"tag {tag} is an integer id, not a tag name; give the names of the ids with "
                            f"--label-names (comma-separated, or a file of names / a datasets dataset_info.json)",
                            str(path), line)
        return str(tag)
    text = str(tag).strip()
    if isinstance(tag, bool) or not text.lstrip("-").isdigit() or not 0 <= int(text) < len(names):
        raise DataError(f"tag {tag!r} is not an id of the {len(names)} --label-names (0 to {len(names) - 1})",
                        str(path), line)
    return names[int(text)]


_COLUMN_SEPARATORS = {"\t": "TAB", " ": "space"}


def _columns(line: str, separator: list[str], path: Path, lineno: int) -> list[str]:
    """The columns of a CoNLL line, split at ASCII TAB or space only (str.split() would also split at U+00A0,
    U+202F, U+0085, U+3000 inside a token). The file's separator is fixed by its first data line (TAB if it has
    one, else spaces) in `separator`; a later line that separates columns with the other is a DataError."""
    body = line.strip(" \t")
    if not separator:
        separator.append("\t" if "\t" in body else " ")
    sep = separator[0]
    if sep == " " and "\t" in body:
        raise DataError("the line separates columns with TAB but the file's first lines use spaces (a file mixing "
                        "TAB and space columns loses part of a token); use one separator", str(path), lineno)
    if sep == "\t":
        cells = body.split("\t")
        if len(cells) == 1 and " " in body:
            raise DataError("the line separates columns with spaces but the file's first lines use TAB (a file "
                            "mixing TAB and space columns loses part of a token); use one separator", str(path),
                            lineno)
        return [c.strip(" ") for c in cells]
    return [c for c in body.split(" ") if c]


def _check_token(token: str, path: Path, lineno: int) -> None:
    if not token:
        raise DataError("empty token", str(path), lineno)
    if token.isspace():
        names = ", ".join(f"U+{ord(c):04X} {unicodedata.name(c, '?')}" for c in dict.fromkeys(token))
        raise DataError(f"the token is only whitespace ({names}); remove the line or replace the character",
                        str(path), lineno)


def iter_sentences(path: str | Path, scheme: str = "iob2", labelled: bool = True, encoding: str = "utf-8",
                   lines: LineReader | None = None, label_names: Sequence[str] | None = None) -> Iterator[Sentence]:
    """Sentences of a CoNLL-style or JSONL file one at a time (see the module docstring); `lines`: a LineReader of
    `path` to read through (its bytes_read follows the position); `label_names`: the names of integer tag ids
    (None: tags are names, and an integer id is a DataError saying so)."""
    if scheme not in TAG_SCHEMES:
        raise ConfigError(invalid_choice("--scheme", scheme, TAG_SCHEMES))
    path = Path(path)
    lines = lines or LineReader(path, encoding)
    if path.suffix.lower() in (".jsonl", ".json"):
        yield from _iter_jsonl(path, lines, scheme, labelled, label_names)
        return
    if path.suffix.lower() == ".csv":
        raise DataError("a .csv file is not token-classification data (comma-separated cells would be read as "
                        "CoNLL columns); give a CoNLL file (token<TAB>tag lines: .conll, .txt, .tsv, ...) or JSONL "
                        "with tokens and tags", str(path))
    tokens: list[str] = []
    tags: list[str] = []
    numbers: list[int] = []
    separator: list[str] = []
    for lineno, raw in lines:
        line = strip_ending(raw)
        stripped = line.strip(" \t\r")
        if not stripped or stripped.startswith("-DOCSTART-"):
            if tokens:
                yield _sentence(tokens, tags, scheme, labelled, path, numbers)
            tokens, tags, numbers = [], [], []
            continue
        parts = _columns(line, separator, path, lineno)
        _check_token(parts[0], path, lineno)
        if labelled:
            if len(parts) < 2 or not parts[-1]:
                raise DataError(f"missing tag for token {parts[0]!r} (expected 'token<TAB>tag' or 'token tag')",
                                str(path), lineno)
            tag = _named(parts[-1], label_names, path, lineno)
            _check_tag(tag, scheme, path, lineno)
            tags.append(tag)
        tokens.append(parts[0])
        numbers.append(lineno)
    if tokens:
        yield _sentence(tokens, tags, scheme, labelled, path, numbers)
    if lines.blank:
        raise lines.empty_error()


def read_conll(path: str | Path, scheme: str = "iob2", labelled: bool = True, encoding: str = "utf-8",
               label_names: Sequence[str] | None = None) -> list[Sentence]:
    """All sentences of a CoNLL-style or JSONL file (see iter_sentences); DataError when it holds none."""
    out = list(iter_sentences(path, scheme, labelled, encoding, label_names=label_names))
    if not out:
        raise DataError("no sentences (only blank or -DOCSTART- lines)", str(path))
    return out


def _iter_jsonl(path: Path, lines: LineReader, scheme: str, labelled: bool,
                label_names: Sequence[str] | None) -> Iterator[Sentence]:
    for lineno, obj in jsonl_objects(lines):
        tokens = obj.get("tokens")
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t for t in tokens):
            raise DataError('expected {"tokens": [non-empty strings], "tags": [...]}', str(path), lineno)
        for t in tokens:
            _check_token(t, path, lineno)
        tags = None
        if labelled:
            tags = obj.get("tags", obj.get("ner_tags"))
            if not isinstance(tags, list):
                raise DataError('no "tags" list', str(path), lineno)
            if len(tags) != len(tokens):
                raise DataError(f"{len(tokens)} tokens but {len(tags)} tags", str(path), lineno)
            tags = [_named(t, label_names, path, lineno) for t in tags]
            for t in tags:
                _check_tag(t, scheme, path, lineno)
        yield _sentence(tokens, tags or [], scheme, labelled, path, [lineno] * len(tokens))


def sentence_types(sentence: Sentence, scheme: str) -> set[str]:
    """The entity types of a sentence (plain: its distinct tags): what the split stratifies on."""
    if scheme == "plain":
        return set(sentence.tags)
    return {etype for _, _, etype in iob2_spans(sentence.tags)}


def tag_vocab(*parts: Sequence[Sentence], scheme: str = "iob2") -> list[str]:
    """The label list over all `parts` (train, dev, test): plain: the sorted distinct tags; entity schemes: 'O' then
    B-X, I-X for every type (I-X added even if unseen: continuations need it)."""
    if scheme == "plain":
        return sorted({t for part in parts for s in part for t in s.tags})
    types = sorted({t[2:] for part in parts for s in part for t in s.tags if t != "O"})
    return ["O"] + [f"{p}-{t}" for t in types for p in "BI"]


def types_missing_from_train(train: Sequence[Sentence], others: dict[str, Sequence[Sentence]],
                             scheme: str = "iob2") -> list[str]:
    """One line per entity type (plain: tag) of dev / test that training lacks: the model cannot learn it and its
    entities count as misses."""
    known = set().union(*(sentence_types(s, scheme) for s in train)) if train else set()
    what = "tag" if scheme == "plain" else "entity type"
    out = []
    for split, sentences in others.items():
        found: dict[str, list[Sentence]] = {}
        for s in sentences:
            for t in sentence_types(s, scheme) - known:
                found.setdefault(t, []).append(s)
        for t, where in sorted(found.items()):
            out.append(f"{split} {what} {t!r} ({len(where)} sentence(s), first at {where[0].source}:"
                       f"{where[0].lines[0]}) does not occur in the training data: the model cannot learn it and "
                       f"it counts as a miss")
    return out


def split_sentences(sentences: Sequence[Sentence], fractions: Sequence[float], seed: int,
                    scheme: str = "iob2") -> list[list[Sentence]]:
    """Deterministic split into parts of the given sizes: fractions of the sentences (e.g. 0.8, 0.1, 0.1) or counts
    (e.g. 800,100,100), as bertforge.finetuning.splitting.split_counts reads them; a remainder is left out, stratified by entity type (plain: by tag) with iterative stratification (Sechidis,
    Tsoumakas & Vlahavas 2011, "On the stratification of multi-label data"): the type with the fewest unplaced
    sentences goes first, each of its sentences (in a seeded order) to the part that most lacks that type, then
    the part that most lacks sentences. Every type that occurs in >= 2 sentences has one in the first part (train).
    Sentences without any type fill the parts to their sizes. Within a part the seeded order is kept."""
    n = len(sentences)
    counts = split_counts(fractions, n, "sentences")  # checks counts against n
    shares = list(fractions) if all(f <= 1 for f in fractions) else [c / max(n, 1) for c in counts]
    if 1.0 - sum(shares) > 1e-9:
        shares.append(1.0 - sum(shares))  # the part left out
    order = list(range(n))
    random.Random(seed).shuffle(order)
    types = [sentence_types(sentences[i], scheme) if sentences[i].tags is not None else set() for i in range(n)]
    counts = Counter(t for ts in types for t in ts)
    want = [f * n for f in shares]
    want_type = {t: [f * c for f in shares] for t, c in counts.items()}
    in_train: Counter = Counter()
    part_of: list[int | None] = [None] * n
    pending = {t: [i for i in order if t in types[i]] for t in counts}

    def place(i: int, p: int) -> None:
        part_of[i] = p
        want[p] -= 1
        for u in types[i]:
            want_type[u][p] -= 1
            if p == 0:
                in_train[u] += 1

    while pending:
        left = {t: [i for i in idx if part_of[i] is None] for t, idx in pending.items()}
        left = {t: idx for t, idx in left.items() if idx}
        if not left:
            break
        t = min(left, key=lambda u: (len(left[u]), u))
        for i in left[t]:
            if counts[t] >= 2 and not in_train[t] and shares[0] > 0:
                p = 0
            else:
                p = max(range(len(shares)), key=lambda q: (want_type[t][q], want[q], -q))
            place(i, p)
        del pending[t]
    for i in order:
        if part_of[i] is None:
            place(i, max(range(len(shares)), key=lambda q: (want[q], -q)))
    return [[sentences[i] for i in order if part_of[i] == p] for p in range(len(fractions))]


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
           label2id: dict[str, int] | None = None, label_all_subwords: bool = False, stride: int = 32,
           scheme: str = "iob2") -> list[Window]:
    """Windows of [CLS] sub-words [SEP] (at most max_seq_length tokens) covering every word of every sentence;
    labels are None when `label2id` is None or a sentence is unlabelled. `scheme` plain: continuation sub-words
    (label_all_subwords) keep the word's tag as it is."""
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
                        entity_start = scheme != "plain" and tag.startswith("B-")
                        labels.append(label2id["I-" + tag[2:] if entity_start else tag])
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
