"""`--masking device`: MLM masking on the accelerator, inside the step, instead of in the host loader.

The loader then ships unmasked ids with their special-token masks (PretrainingCollator(mask=False)); this module
masks the layout the model consumes — padded (B, S) or unpadded/packed (total,) — with `bertforge.ops.mlm_mask`
(kernels='triton': one Philox pass, kernels/masking.py; 'none': the pure-torch reference) and adds the keys the
model's masked-rows MLM head needs: masked_positions (flat into the chosen layout) and mlm_labels.

Differences from host masking (engine/data/masking.py), by design of a one-pass GPU kernel: each non-special token is
chosen independently with --mlm-probability (host: exactly round(p * n) per sequence, at least one), so a sequence
may get no masked token (a whole batch without one gets its first maskable token masked); whole-word masking is
host-only. Random replacements follow the same corpus unigram (or
uniform) distribution as the host's.

Seeds: every batch carries `mask_seed`, derived by the source from (run seed, epoch, global micro-batch index) —
resume, and 2 ranks vs 1, reproduce the masks exactly, as with host masking."""
from __future__ import annotations

import numpy as np
import torch

from bertforge import ops
from bertforge.kernels.reference import unigram_cdf_from_counts


class DeviceMasker:
    """Masks model inputs on their device. replacement_probs (V,): distribution of the 10% random replacements
    (zero on special tokens), e.g. `PretrainingDataset.masker(...).replacement_probs`. Each non-special token is
    chosen with mlm_probability; of those, mask_replace_prob become [MASK] and random_replace_prob a random token."""

    def __init__(self, mask_token_id: int, replacement_probs: np.ndarray, mlm_probability: float, backend: str,
                 device: torch.device, mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1):
        probs = torch.as_tensor(np.asarray(replacement_probs, dtype=np.float64))
        if probs.dim() != 1 or not probs.sum() > 0:
            raise ValueError("device masking: replacement_probs must be a (vocab_size,) distribution, not all zero")
        self.cdf = unigram_cdf_from_counts(probs).to(device)
        self.vocab_size = probs.numel()
        self.mask_token_id, self.mlm_probability, self.backend = mask_token_id, mlm_probability, backend
        self.mask_replace_prob, self.random_replace_prob = mask_replace_prob, random_replace_prob

    def __call__(self, inputs: dict, special: torch.Tensor, seed: int) -> dict:
        """inputs: the forward's arguments without MLM keys (input_ids in the layout the model gets); special: bool,
        input_ids' shape. Returns inputs with masked input_ids, masked_positions (n,) and mlm_labels (n,)."""
        ids = inputs["input_ids"]
        if special.shape != ids.shape:
            raise ValueError(f"device masking: special-token mask {tuple(special.shape)} != ids {tuple(ids.shape)}")
        masked, labels, positions = ops.mlm_mask(
            ids, special.to(ids.device, non_blocking=True), mlm_probability=self.mlm_probability,
            mask_token_id=self.mask_token_id, vocab_size=self.vocab_size, unigram_cdf=self.cdf, seed=seed,
            mask_replace_prob=self.mask_replace_prob, random_replace_prob=self.random_replace_prob,
            backend=self.backend)
        if positions.numel() == 0:  # (its size is known on the host) nothing chosen: a NaN loss would skip the step
            positions = (~special.reshape(-1).to(ids.device)).nonzero().flatten()[:1]  # first maskable token
            labels = ids.reshape(-1).long().clone()
            masked = masked.reshape(-1).clone()
            masked[positions] = self.mask_token_id
            masked = masked.view(ids.shape)
        return {**inputs, "input_ids": masked, "masked_positions": positions,
                "mlm_labels": labels.reshape(-1)[positions]}
