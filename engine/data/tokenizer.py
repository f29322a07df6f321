"""WordPiece vocabulary: train one with the `tokenizers` library or load an existing BERT vocabulary.

A trained or loaded tokenizer has BERT's pipeline: BertNormalizer (lower-casing and accent stripping when uncased)
→ BertPreTokenizer → WordPiece ("##" continuation prefix) → template `[CLS] A [SEP] B [SEP]` with type ids 0/1.
`train_wordpiece` writes vocab.txt + tokenizer.json (+ tokenizer_config.json, special_tokens_map.json) so that
`transformers.BertTokenizerFast.from_pretrained(out_dir)` loads the folder."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from bertforge.errors import CheckpointError, ConfigError, DataError
from bertforge.io import write_text

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MIN_VOCAB_SIZE = 32  # the 5 specials plus a minimal alphabet: below it WordPiece returns the alphabet anyway


@dataclass(frozen=True)
class SpecialIds:
    pad_id: int
    unk_id: int
    cls_id: int
    sep_id: int
    mask_id: int

    def as_list(self) -> list[int]:
        return [self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id]


def special_ids(tok: Tokenizer, source: str | Path | None = None) -> SpecialIds:
    """The ids of BERT's special tokens. Raises DataError naming `source` (the tokenizer's file) when one is
    missing: a BERT WordPiece vocabulary has all of [PAD] [UNK] [CLS] [SEP] [MASK]."""
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    if any(i is None for i in ids):
        missing = [t for t, i in zip(SPECIAL_TOKENS, ids) if i is None]
        raise DataError(f"the vocabulary lacks the special token(s) {', '.join(missing)} that BERT needs; use a BERT "
                        f"WordPiece vocabulary (or `bertforge tokenizer train`)", str(source) if source else None)
    return SpecialIds(*ids)


def _bert_pipeline(tok: Tokenizer, lowercase: bool) -> Tokenizer:
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=lowercase, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def _post_processor(tok: Tokenizer) -> None:
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])


def train_wordpiece(files_or_iter: Iterable[str] | Iterable[Path] | str | Path, out_dir: str | Path,
                    vocab_size: int = 30522, lowercase: bool = True, min_frequency: int = 2,
                    show_progress: bool = True) -> Tokenizer:
    """Train WordPiece on raw text and save it to `out_dir`.

    files_or_iter: a corpus path / list of corpus paths (any format bertforge.data.readers understands), or an iterable
    of text strings. Special tokens get ids 0-4: [PAD] [UNK] [CLS] [SEP] [MASK]."""
    if vocab_size < MIN_VOCAB_SIZE:
        raise ConfigError(f"--vocab-size {vocab_size} is too small: the {len(SPECIAL_TOKENS)} special tokens and a "
                          f"corpus's alphabet need at least {MIN_VOCAB_SIZE} entries")
    if isinstance(files_or_iter, (str, Path)):
        files_or_iter = [files_or_iter]
    items = list(files_or_iter) if not isinstance(files_or_iter, Iterator) else files_or_iter
    if isinstance(items, list) and items and all(isinstance(x, Path) or Path(str(x)).exists() for x in items):
        from bertforge.data.readers import read_documents

        texts: Iterable[str] = (d.text for d in read_documents(items))
    else:
        texts = (str(x) for x in items)
    tok = _bert_pipeline(Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100)), lowercase)
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=list(SPECIAL_TOKENS), continuing_subword_prefix="##",
                                        show_progress=show_progress)
    tok.train_from_iterator(texts, trainer=trainer)
    _post_processor(tok)
    save_tokenizer(tok, out_dir, lowercase)
    return tok


def save_tokenizer(tok: Tokenizer, out_dir: str | Path, lowercase: bool) -> None:
    """Write vocab.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json (each atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    if [i for _, i in vocab] != list(range(len(vocab))):
        raise DataError("vocabulary ids are not contiguous", str(out))
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": lowercase, "strip_accents": None,
              "tokenize_chinese_chars": True, "model_max_length": 512, "unk_token": "[UNK]", "sep_token": "[SEP]",
              "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}
    special_map = {k: config[k] for k in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")}
    for name, text in [("vocab.txt", "".join(t + "\n" for t, _ in vocab)), ("tokenizer.json", tok.to_str()),
                       ("tokenizer_config.json", json.dumps(config, indent=2)),
                       ("special_tokens_map.json", json.dumps(special_map, indent=2))]:
        write_text(out / name, text)


def check_vocab_file(path: str | Path) -> list[str]:
    """The entries of a BERT vocab.txt (one token a line, the id is the 0-based line number), checked: a blank
    (empty or whitespace-only) line or an entry seen before would shift every later id against the model's
    embedding rows, so either is a DataError naming file and line. "\\n" and "\\r\\n" endings are accepted."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the vocabulary: {exc.strerror or exc}", str(path)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError("the vocabulary is not valid UTF-8", str(path), line) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the ending of the last line
    seen: dict[str, int] = {}
    entries = []
    for lineno, line in enumerate(lines, 1):
        token = line[:-1] if line.endswith("\r") else line
        if not token.strip():
            raise DataError("blank line in the vocabulary: ids are line numbers, so every later id would shift "
                            "against the model's embedding rows; remove the line", str(path), lineno)
        if token in seen:
            raise DataError(f"duplicate vocabulary entry {token!r} (first on line {seen[token]}): ids are line "
                            f"numbers, so every later id would shift; remove the duplicate", str(path), lineno)
        seen[token] = lineno
        entries.append(token)
    if not entries:
        raise DataError("the vocabulary is empty", str(path))
    return entries


def cased_entries(entries: Iterable[str]) -> int:
    """How many entries (special "[...]" tokens aside) change under lower-casing: an uncased vocabulary has none
    (they could never be produced after its lower-casing normalizer), a cased one has many."""
    return sum(1 for t in entries if t != t.lower() and not (t.startswith("[") and t.endswith("]")))


@dataclass(frozen=True)
class CaseDecision:
    lowercase: bool
    reason: str
    """Where the decision came from, for `tokenizer info` and messages."""

    def describe(self) -> str:
        return f"{'uncased' if self.lowercase else 'cased'} ({self.reason})"


def decide_case(path_or_dir: str | Path, lowercase: bool | None = None) -> CaseDecision:
    """Whether a tokenizer folder / file lower-cases: the `lowercase` argument, else tokenizer.json's normalizer,
    else tokenizer_config.json's do_lower_case, else detected from vocab.txt's entries (cased when any entry has
    upper case, which lower-casing would make unreachable). DataError for a bad vocab.txt (check_vocab_file)."""
    if lowercase is not None:
        return CaseDecision(lowercase, "given")
    p = Path(path_or_dir)
    folder = p if p.is_dir() else p.parent
    json_file = p if p.suffix == ".json" else folder / "tokenizer.json"
    if json_file.is_file() and (p.is_dir() or p.suffix == ".json"):
        try:
            norm = json.loads(json_file.read_text(encoding="utf-8")).get("normalizer") or {}
        except (OSError, ValueError):
            norm = {}
        canon = _canonical_normalizer(norm) or {}
        return CaseDecision(bool(canon.get("lowercase", False)), f"normalizer of {json_file.name}")
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        try:
            value = json.loads(cfg.read_text(encoding="utf-8")).get("do_lower_case")
        except ValueError:
            raise DataError("not valid JSON", str(cfg)) from None
        if value is not None:
            return CaseDecision(bool(value), f"do_lower_case in {cfg.name}")
    vocab = p if p.is_file() else folder / "vocab.txt"
    n = cased_entries(check_vocab_file(vocab))
    if n:
        return CaseDecision(False, f"detected: {n} entries of {vocab.name} have upper case and no "
                                   f"tokenizer_config.json says do_lower_case")
    return CaseDecision(True, f"detected: no entry of {vocab.name} has upper case")


def load_tokenizer(path_or_dir: str | Path, lowercase: bool | None = None) -> Tokenizer:
    """Load tokenizer.json, or build BERT's pipeline around a vocab.txt (checked by check_vocab_file; lower-casing
    as `decide_case` says: `lowercase`, else tokenizer_config.json's do_lower_case, else detected from the
    entries). Accepts the folder or either file. No padding or truncation."""
    p = Path(path_or_dir)
    folder = p if p.is_dir() else p.parent
    if p.is_dir():
        p = folder / "tokenizer.json" if (folder / "tokenizer.json").exists() else folder / "vocab.txt"
    if not Path(path_or_dir).exists():
        raise DataError("no such file or folder; give a tokenizer folder (tokenizer.json or vocab.txt) or either file",
                        str(path_or_dir))
    if not p.exists():
        raise DataError("no tokenizer.json or vocab.txt", str(path_or_dir))
    if p.suffix == ".json":
        try:
            tok = Tokenizer.from_file(str(p))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise DataError(f"cannot load tokenizer: {exc}", str(p)) from None
    else:
        check_vocab_file(p)
        lowercase = decide_case(p, lowercase).lowercase
        tok = _bert_pipeline(Tokenizer(models.WordPiece.from_file(str(p), unk_token="[UNK]")), lowercase)
        special_ids(tok, p)
        tok.add_special_tokens(list(SPECIAL_TOKENS))  # as tokenizer.json files and HF's BertTokenizerFast do
        _post_processor(tok)
    tok.no_padding()
    tok.no_truncation()
    special_ids(tok, p)
    return tok


def check_vocab_rows(vocab_size: int, rows: int, tokenizer: str | Path, model: str | Path) -> None:
    """CheckpointError when the tokenizer has more ids than the model's word-embedding rows (ids past the last row
    would index out of range). Fewer ids than rows is accepted: embeddings padded to a multiple of 8 or 128
    (Megatron's make-vocab-size-divisible-by) keep rows no id reaches."""
    if vocab_size > rows:
        raise CheckpointError(f"{tokenizer}: the tokenizer has {vocab_size} tokens but the model {model} has "
                              f"{rows} word-embedding rows (vocab_size); use the tokenizer the model was trained "
                              f"with")


HASH_VERSION = "v2"  # v1 hashed the vocabulary and lower-casing only (blind to accents, Chinese chars, cleaning)


def tokenizer_identity(tok: Tokenizer) -> dict:
    """Everything about a tokenizer that decides the ids of a text encoded without special tokens, in canonical
    form: the normalizer (BertNormalizer's strip_accents=None resolved to what it means: follow lowercase), the
    pre-tokenizer, the model (type, vocabulary in id order, unknown token, continuation prefix, longest word) and the
    added / special tokens with their matching flags. Equivalent tokenizers (a tokenizer.json and the vocab.txt +
    tokenizer_config.json it was saved with) have equal identities."""
    raw = json.loads(tok.to_str())
    model = {k: v for k, v in (raw.get("model") or {}).items() if k != "vocab"}
    model["vocab"] = [t for t, _ in sorted(tok.get_vocab(with_added_tokens=False).items(), key=lambda kv: kv[1])]
    added = sorted((t["id"], t["content"], bool(t.get("special")), bool(t.get("normalized")),
                    bool(t.get("lstrip")), bool(t.get("rstrip")), bool(t.get("single_word")))
                   for t in raw.get("added_tokens") or [])
    return {"normalizer": _canonical_normalizer(raw.get("normalizer")), "pre_tokenizer": raw.get("pre_tokenizer"),
            "model": model, "added_tokens": added}


def _canonical_normalizer(norm: dict | None):
    if not norm:
        return None
    if norm.get("type") == "BertNormalizer":
        lowercase = bool(norm.get("lowercase", True))
        strip = norm.get("strip_accents")
        return {"type": "BertNormalizer", "clean_text": bool(norm.get("clean_text", True)),
                "handle_chinese_chars": bool(norm.get("handle_chinese_chars", True)),
                "strip_accents": lowercase if strip is None else bool(strip), "lowercase": lowercase}
    if norm.get("type") == "Sequence":
        return {"type": "Sequence", "normalizers": [_canonical_normalizer(n) for n in norm.get("normalizers", [])]}
    return norm


def tokenizer_hash(tok_or_path: Tokenizer | str | Path) -> str:
    """`v2-` + sha256 (16 hex chars) of `tokenizer_identity`: two tokenizers hash equal exactly when they give every
    text the same ids. Datasets store it; pretraining refuses a tokenizer whose hash differs."""
    tok = tok_or_path if isinstance(tok_or_path, Tokenizer) else load_tokenizer(tok_or_path)
    h = hashlib.sha256(json.dumps(tokenizer_identity(tok), sort_keys=True).encode())
    return f"{HASH_VERSION}-{h.hexdigest()[:16]}"
