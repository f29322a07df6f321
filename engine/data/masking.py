"""Dynamic masked-language-model masking (BERT's 80/10/10), reproducible from (seed, epoch, sample index).

Per sequence, k = max(1, round(mlm_probability * n)) of its n maskable (non-special) tokens are chosen, as BERT's
create_pretraining_data.py does, in the order of a random score per token; with whole-word masking the score belongs
to the word, so all sub-words of a word are chosen together, and words are taken while they fit in k (the first
word always). Each chosen token becomes [MASK] with probability 0.8, a random token with 0.1 (drawn by the corpus's
unigram frequency, or uniformly over the non-special vocabulary), and stays unchanged with 0.1. Labels hold the
original id at chosen positions and -100 elsewhere.

Randomness is counter-based: one 64-bit SplitMix64 output per (seed, epoch, sample id, position) - the finaliser of
key(seed, epoch) + (sample_id * 2^20 + position) * golden, computed vectorised in numpy - split into three fields:
bits 0-23 the selection score, bits 24-39 the 80/10/10 action, bits 40-63 the random token. A sample's mask therefore
depends only on (seed, epoch, sample id), not on the batch it lands in, the worker or the padding, and resuming
reproduces it (engine/data/splitmix.py)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bertforge.data.splitmix import counter_bits

POS_BITS = 20  # positions < 2^20 per sequence


def mask_bits(seed: int, epoch: int, sample_ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """uint64 random bits for every (sample id, position): SplitMix64 of the counter sample_id * 2^20 + position
    under the (seed, epoch) key. sample_ids (B, 1) and positions (1, S) broadcast to (B, S)."""
    ctr = (np.asarray(sample_ids, dtype=np.uint64) << np.uint64(POS_BITS)) | np.asarray(positions, np.uint64)
    return counter_bits(seed, epoch, ctr)


@dataclass
class Masker:
    """Masks batches of token ids. `replacement_probs` (vocab_size,) is the distribution of random replacement tokens
    (zero on special tokens); build it with `replacement_distribution`."""

    mask_token_id: int
    replacement_probs: np.ndarray
    mlm_probability: float = 0.15
    seed: int = 0
    mask_replace_prob: float = 0.8    # of chosen tokens -> [MASK]
    random_replace_prob: float = 0.1  # of chosen tokens -> random token; the rest stay unchanged

    def __post_init__(self):
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must lie in (0, 1), got {self.mlm_probability}")
        if self.mask_replace_prob < 0 or self.random_replace_prob < 0 or \
                self.mask_replace_prob + self.random_replace_prob > 1:
            raise ValueError("mask_replace_prob and random_replace_prob must be >= 0 and sum to at most 1")
        p = np.asarray(self.replacement_probs, dtype=np.float64)
        if p.sum() <= 0:
            raise ValueError("replacement distribution is all zero")
        self._cdf = np.cumsum(p / p.sum())
        self._cdf[-1] = 1.0

    def __call__(self, input_ids: np.ndarray, special_mask: np.ndarray, epoch: int = 0,
                 sample_ids: np.ndarray | None = None, word_start: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """input_ids (B, S) int, special_mask (B, S) bool (True = never mask: [CLS], [SEP], [PAD], ...),
        sample_ids (B,) global sample indices (default 0..B-1), word_start (B, S) bool (True where a word begins;
        enables whole-word masking). Returns (masked_ids (B, S) int64, labels (B, S) int64, -100 where not chosen)."""
        ids = np.asarray(input_ids, dtype=np.int64)
        special = np.asarray(special_mask, dtype=bool)
        B, S = ids.shape
        sid = (np.arange(B) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64)).reshape(B, 1)
        pos = np.arange(S, dtype=np.int64).reshape(1, S)
        cand = ~special
        n_cand = cand.sum(axis=1)
        k = np.where(n_cand > 0, np.maximum(1, np.floor(self.mlm_probability * n_cand + 0.5)), 0).astype(np.int64)
        h = mask_bits(self.seed, epoch, sid, pos)                               # (B, S) uint64
        # selection score: 24 random bits above the position, so scores are unique within a row
        score = ((h & np.uint64(0xFFFFFF)) << np.uint64(POS_BITS)).astype(np.int64) | pos
        if word_start is None:
            score = np.where(cand, score, np.int64(1) << 62)
            kth = np.take_along_axis(np.sort(score, axis=1), np.maximum(k - 1, 0)[:, None], axis=1)  # (B, 1)
            chosen = cand & (score <= kth) & (k[:, None] > 0)
        else:
            chosen = self._whole_word(score, cand, np.asarray(word_start, dtype=bool) | special, k, pos)
        action = ((h >> np.uint64(24)) & np.uint64(0xFFFF)).astype(np.float64) * (1.0 / 65536)
        to_mask = chosen & (action < self.mask_replace_prob)
        to_random = chosen & (action >= self.mask_replace_prob) & \
            (action < self.mask_replace_prob + self.random_replace_prob)
        out = ids.copy()
        out[to_mask] = self.mask_token_id
        if to_random.any():
            ur = (h[to_random] >> np.uint64(40)).astype(np.float64) * 2.0 ** -24
            out[to_random] = np.minimum(np.searchsorted(self._cdf, ur, side="right"), len(self._cdf) - 1)
        labels = np.where(chosen, ids, -100)
        return out, labels

    def mask_sequences(self, seqs, special_ids, epoch: int = 0, sample_ids=None) -> tuple[list, list]:
        """Ragged form of __call__: seqs, a list of B token-id lists (special_ids never chosen), sample_ids (B,)
        (default 0..B-1) -> (masked ids, labels (-100 = not chosen)), one list per sequence. The same draws as the
        right-padded (B, max len) batch, since a mask depends only on (seed, epoch, sample id, position)."""
        width = max(len(s) for s in seqs)
        ids = np.zeros((len(seqs), width), dtype=np.int64)
        special = np.ones((len(seqs), width), dtype=bool)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
            special[i, : len(s)] = np.isin(np.asarray(s), list(special_ids))
        sid = None if sample_ids is None else np.asarray(sample_ids, dtype=np.int64)
        masked, labels = self(ids, special, epoch, sid)
        return ([masked[i, : len(s)].tolist() for i, s in enumerate(seqs)],
                [labels[i, : len(s)].tolist() for i, s in enumerate(seqs)])

    @staticmethod
    def _whole_word(score, cand, word_start, k, pos):
        B, S = score.shape
        start_pos = np.maximum.accumulate(np.where(word_start, pos, 0), axis=1)  # (B, S) first token of my word
        rows = np.arange(B)[:, None]
        score = np.where(cand, score[rows, start_pos], np.int64(1) << 62)         # the word's score on all its tokens
        order = np.argsort(score, axis=1, kind="stable")                          # words contiguous, in score order
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.broadcast_to(pos, (B, S)), axis=1)
        # tokens per word: next word start after my word's start
        starts_idx = np.where(word_start, pos, S)
        next_start = np.concatenate([np.minimum.accumulate(starts_idx[:, ::-1], axis=1)[:, ::-1],
                                     np.full((B, 1), S)], axis=1)                # (B, S+1) first start >= p
        word_len = next_start[rows, start_pos + 1] - start_pos
        word_rank = rank[rows, start_pos]                                         # rank of the word's first token
        return cand & ((word_rank + word_len <= k[:, None]) | (word_rank == 0))


def replacement_distribution(vocab_size: int, special_ids, unigram_counts: np.ndarray | None = None) -> np.ndarray:
    """(vocab_size,) probabilities of random replacement tokens: unigram frequency when counts are given (add-one
    smoothing is not applied: unseen tokens are never drawn), else uniform; zero on special ids."""
    if unigram_counts is not None:
        p = np.asarray(unigram_counts, dtype=np.float64)[:vocab_size].copy()
        if len(p) < vocab_size:
            p = np.concatenate([p, np.zeros(vocab_size - len(p))])
    else:
        p = np.ones(vocab_size, dtype=np.float64)
    p[np.asarray(list(special_ids), dtype=np.int64)] = 0.0
    if p.sum() <= 0:  # a corpus of special tokens only: fall back to uniform
        p = np.ones(vocab_size)
        p[np.asarray(list(special_ids), dtype=np.int64)] = 0.0
    return p / p.sum()


def build_masker(mask_token_id: int, vocab_size: int, special_ids, unigram_counts: np.ndarray | None = None,
                 mlm_probability: float = 0.15, seed: int = 0, mask_replace_prob: float = 0.8,
                 random_replace_prob: float = 0.1) -> Masker:
    """The host's 80/10/10 Masker: random replacements drawn by `unigram_counts` (vocab_size,) (None = uniformly)
    over the vocabulary less special_ids and mask_token_id (`replacement_distribution`). Pretraining corpora, blends,
    finetuning's domain MLM and `mask_tokens` all build their masker here."""
    specials = set(int(i) for i in special_ids) | {int(mask_token_id)}
    probs = replacement_distribution(vocab_size, sorted(specials), unigram_counts)
    return Masker(mask_token_id, probs, mlm_probability, seed, mask_replace_prob, random_replace_prob)


def mask_tokens(input_ids, special_tokens_mask, rng_or_seed, *, mask_token_id: int, vocab_size: int,
                mlm_probability: float = 0.15, unigram_probs: np.ndarray | None = None, whole_word=None, epoch: int = 0,
                sample_ids=None, special_ids=None, mask_replace_prob: float = 0.8,
                random_replace_prob: float = 0.1):
    """Functional form of `Masker` for any batch of token ids (numpy or torch, (B, S)); returns (masked_ids, labels)
    of the input's kind. rng_or_seed: an int seed or a numpy Generator (one seed is drawn from it).
    whole_word: None, or word_start (B, S) bool. unigram_probs: (vocab_size,) replacement distribution or counts
    (None = uniform). special_ids: ids never drawn as replacements (default: none besides mask_token_id)."""
    is_torch = type(input_ids).__module__.startswith("torch")
    to_np = (lambda x: None if x is None else x.detach().cpu().numpy()) if is_torch else \
        (lambda x: None if x is None else np.asarray(x))
    seed = int(rng_or_seed.integers(0, 2 ** 63)) if isinstance(rng_or_seed, np.random.Generator) else int(rng_or_seed)
    masker = build_masker(mask_token_id, vocab_size, special_ids or (), unigram_probs, mlm_probability, seed,
                          mask_replace_prob, random_replace_prob)
    masked, labels = masker(to_np(input_ids), to_np(special_tokens_mask), epoch, to_np(sample_ids), to_np(whole_word))
    if is_torch:
        import torch

        return torch.from_numpy(masked).to(input_ids.device), torch.from_numpy(labels).to(input_ids.device)
    return masked, labels


def continuation_ids(tokenizer) -> np.ndarray:
    """(vocab_size,) bool: True for WordPiece continuation pieces ('##...') of a tokenizers.Tokenizer."""
    vocab = tokenizer.get_vocab()
    out = np.zeros(max(vocab.values()) + 1, dtype=bool)
    for tok, i in vocab.items():
        out[i] = tok.startswith("##")
    return out


def most_frequent_token_accuracy(label_counts) -> float:
    """The unigram baseline of a set of masks: the accuracy of always predicting the most frequent gold token,
    max(label_counts) / sum(label_counts). label_counts (V,): how often each id is a masked position's label.
    0.0 when nothing is masked."""
    counts = np.asarray(label_counts, dtype=np.float64)
    total = counts.sum()
    return float(counts.max() / total) if total > 0 else 0.0
