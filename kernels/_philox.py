"""Keep flags of the dropout kernels from one Philox-4x32-10 call's four 32-bit words (triton.language.philox), the
rule of bertforge.kernels.reference (`_keep_flags`, `dropout_threshold`), shared by attention, the post-LN epilogue
and the embeddings' dropout.

DROP_GROUP (a constexpr) is the number of elements one call decides:
  16 (8-bit thresholds, the default; FlashAttention-2's rate): element 4w + k of the group is byte k of word w (the
     call's 16 bytes in little-endian order), kept when the byte is >= THRESH = round(p * 256);
   4 (24-bit thresholds): element w is word w, kept when its top 24 bits are >= THRESH = round(p * 2^24).
The elements of a group are joined along in-thread dimensions (tl.join), so a thread holds a whole group."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def keep_flags(r0, r1, r2, r3, THRESH, A: tl.constexpr, B: tl.constexpr, DROP_GROUP: tl.constexpr):
    """Words r0..r3 (A, B) uint32 of A x B Philox calls -> keep flags (A, B, DROP_GROUP): [a, b, t] is element t of
    call (a, b)."""
    # join(join(x0, x2), join(x1, x3))[.., i, j] is x_(2i + j): merging the two in-thread dims keeps that order
    if DROP_GROUP == 16:
        words = tl.reshape(tl.join(tl.join(r0, r2), tl.join(r1, r3)), (A, 4 * B))  # [a, 4b + w]
        f0 = (words & 0xFF).to(tl.int32) >= THRESH
        f1 = ((words >> 8) & 0xFF).to(tl.int32) >= THRESH
        f2 = ((words >> 16) & 0xFF).to(tl.int32) >= THRESH
        f3 = (words >> 24).to(tl.int32) >= THRESH
        return tl.reshape(tl.join(tl.join(f0, f2), tl.join(f1, f3)), (A, B, 16))  # [a, b, 4w + k]
    else:
        k0 = (r0 >> 8).to(tl.int32) >= THRESH
        k1 = (r1 >> 8).to(tl.int32) >= THRESH
        k2 = (r2 >> 8).to(tl.int32) >= THRESH
        k3 = (r3 >> 8).to(tl.int32) >= THRESH
        return tl.reshape(tl.join(tl.join(k0, k2), tl.join(k1, k3)), (A, B, 4))
