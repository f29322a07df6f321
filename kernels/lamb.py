"""LAMB step (You et al. 2019, "Large Batch Optimization for Deep Learning", Algorithm 2), multi-tensor.

For each parameter x with gradient g (all updates in place; grads are never modified):
  m <- beta1 m + (1 - beta1) g             v <- beta2 v + (1 - beta2) g^2
  m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t)   (only with bias_correction)
  r = m_hat / (sqrt(v_hat) + eps)          u = r + weight_decay x
  ratio = ||x|| / ||u||  (1 when either norm is 0), clamped to max_trust_ratio unless None  (phi = identity)
  x <- x - lr ratio u
Norms are per tensor (the paper's per-layer trust ratio).

`bertforge.kernels.reference.lamb_step_ref` is foreach torch (the CPU path and the oracle). `fused_lamb_step` runs two Triton
launches over all tensors of the call, addressed through a table of chunks (tensor id, start, data pointers):
  phase 1 updates m and v in place and writes per-chunk partial sums of ||x||^2 and ||u||^2 (fp32);
  torch sums the partials per tensor (an fp64 cumsum over the chunk list: deterministic, no atomics);
  phase 2 recomputes u from the new m, v and x, and applies x -= lr ratio u.
Traffic per element: phase 1 reads x, g, m, v and writes m, v; phase 2 reads x, m, v and writes x (40 bytes in fp32).
params, exp_avgs and exp_avg_sqs must be fp32; grads may be fp32, bf16 or fp16 (one dtype per call).
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from bertforge.kernels._common import is_interpreting
from bertforge.kernels.reference import lamb_bias_corrections


@triton.jit
def _lamb_phase1_kernel(
    CHUNK_TENSOR_ptr,  # (n_chunks,) int32 index of the tensor each chunk belongs to
    CHUNK_START_ptr,  # (n_chunks,) int64 first element of the chunk inside its tensor
    NUMEL_ptr,  # (n_tensors,) int64
    P_ADDR_ptr,  # (n_tensors,) int64 data pointers of params (fp32)
    G_ADDR_ptr,  # (n_tensors,) int64 data pointers of grads (G_DTYPE)
    M_ADDR_ptr,  # (n_tensors,) int64 data pointers of exp_avgs (fp32)
    V_ADDR_ptr,  # (n_tensors,) int64 data pointers of exp_avg_sqs (fp32)
    PART_ptr,  # (n_chunks, 2) fp32 output: per-chunk sum of x^2 and of u^2
    beta1,
    beta2,
    eps,
    weight_decay,
    bc1,  # 1 - beta1^step (1 without bias correction)
    bc2,  # 1 - beta2^step
    G_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    c = tl.program_id(0)
    t = tl.load(CHUNK_TENSOR_ptr + c)
    start = tl.load(CHUNK_START_ptr + c)
    numel = tl.load(NUMEL_ptr + t)
    p_ptr = tl.load(P_ADDR_ptr + t).to(tl.pointer_type(tl.float32))
    g_ptr = tl.load(G_ADDR_ptr + t).to(tl.pointer_type(G_DTYPE))
    m_ptr = tl.load(M_ADDR_ptr + t).to(tl.pointer_type(tl.float32))
    v_ptr = tl.load(V_ADDR_ptr + t).to(tl.pointer_type(tl.float32))
    offs = start + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(p_ptr + offs, mask=mask, other=0.0)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    m = tl.load(m_ptr + offs, mask=mask, other=0.0)
    v = tl.load(v_ptr + offs, mask=mask, other=0.0)
    m = m + (1.0 - beta1) * (g - m)  # lerp, as torch._foreach_lerp_
    v = v * beta2 + (1.0 - beta2) * g * g
    tl.store(m_ptr + offs, m, mask=mask)
    tl.store(v_ptr + offs, v, mask=mask)
    u = (m / bc1) / (tl.sqrt(v / bc2) + eps) + weight_decay * x
    u = tl.where(mask, u, 0.0)
    tl.store(PART_ptr + 2 * c, tl.sum(x * x, axis=0))
    tl.store(PART_ptr + 2 * c + 1, tl.sum(u * u, axis=0))


@triton.jit
def _lamb_phase2_kernel(
    CHUNK_TENSOR_ptr,  # (n_chunks,) int32
    CHUNK_START_ptr,  # (n_chunks,) int64
    NUMEL_ptr,  # (n_tensors,) int64
    P_ADDR_ptr,  # (n_tensors,) int64 params (fp32), updated in place
    M_ADDR_ptr,  # (n_tensors,) int64 exp_avgs (fp32), already updated
    V_ADDR_ptr,  # (n_tensors,) int64 exp_avg_sqs (fp32), already updated
    NORMSQ_ptr,  # (n_tensors, 2) fp32 ||x||^2, ||u||^2 per tensor
    lr,
    eps,
    weight_decay,
    bc1,
    bc2,
    max_trust_ratio,
    CLAMP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    c = tl.program_id(0)
    t = tl.load(CHUNK_TENSOR_ptr + c)
    start = tl.load(CHUNK_START_ptr + c)
    numel = tl.load(NUMEL_ptr + t)
    p_ptr = tl.load(P_ADDR_ptr + t).to(tl.pointer_type(tl.float32))
    m_ptr = tl.load(M_ADDR_ptr + t).to(tl.pointer_type(tl.float32))
    v_ptr = tl.load(V_ADDR_ptr + t).to(tl.pointer_type(tl.float32))
    w_norm = tl.sqrt(tl.load(NORMSQ_ptr + 2 * t))
    u_norm = tl.sqrt(tl.load(NORMSQ_ptr + 2 * t + 1))
    ratio = tl.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, 1.0)
    if CLAMP:
        ratio = tl.minimum(ratio, max_trust_ratio)
    offs = start + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(p_ptr + offs, mask=mask, other=0.0)
    m = tl.load(m_ptr + offs, mask=mask, other=0.0)
    v = tl.load(v_ptr + offs, mask=mask, other=0.0)
    u = (m / bc1) / (tl.sqrt(v / bc2) + eps) + weight_decay * x
    tl.store(p_ptr + offs, x - (lr * ratio) * u, mask=mask)


_TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


@functools.lru_cache(maxsize=64)
def _chunk_table(numels: tuple[int, ...], block: int, device: str):
    """(chunk_tensor (n_chunks,) int32, chunk_start (n_chunks,) int64, numel (n_tensors,) int64,
    last_chunk (n_tensors,) int64) on `device`, for tensors of these sizes (all > 0); cached per parameter group."""
    numel = torch.tensor(numels, dtype=torch.int64)
    per_tensor = (numel + block - 1) // block
    last = torch.cumsum(per_tensor, 0) - 1
    chunk_tensor = torch.repeat_interleave(torch.arange(len(numels)), per_tensor)
    chunk_start = (torch.arange(int(per_tensor.sum())) - (last - per_tensor + 1)[chunk_tensor]) * block
    return tuple(t.to(device) for t in (chunk_tensor.int(), chunk_start, numel, last))


def fused_lamb_step(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
                    exp_avg_sqs: list[torch.Tensor], *, lr: float, beta1: float, beta2: float, eps: float,
                    weight_decay: float, step: int, bias_correction: bool = True,
                    max_trust_ratio: float | None = 10.0) -> None:
    """Same contract as `bertforge.kernels.reference.lamb_step_ref`: one LAMB step in place on params, exp_avgs, exp_avg_sqs
    (fp32, contiguous, same device); grads (one dtype among fp32/bf16/fp16) are read only. Two kernel launches for
    all tensors."""
    keep = [i for i, p in enumerate(params) if p.numel() > 0]
    if not keep:
        return
    params, grads, exp_avgs, exp_avg_sqs = ([lst[i] for i in keep] for lst in (params, grads, exp_avgs, exp_avg_sqs))
    gdtype = grads[0].dtype
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        if p.dtype != torch.float32 or m.dtype != torch.float32 or v.dtype != torch.float32 or g.dtype != gdtype:
            raise TypeError("fused_lamb_step: params/exp_avgs/exp_avg_sqs must be fp32 and grads one dtype")
        if not (p.is_contiguous() and g.is_contiguous() and m.is_contiguous() and v.is_contiguous()):
            raise ValueError("fused_lamb_step: tensors must be contiguous")
        if not (p.shape == g.shape == m.shape == v.shape):
            raise ValueError("fused_lamb_step: param, grad and state shapes differ")
    device = params[0].device
    block = 16384 if is_interpreting() else 4096
    chunk_tensor, chunk_start, numel, lasts = _chunk_table(tuple(p.numel() for p in params), block, str(device))
    addrs = torch.tensor([[t.data_ptr() for t in lst] for lst in (params, grads, exp_avgs, exp_avg_sqs)],
                         dtype=torch.int64).to(device, non_blocking=True)  # (4, n_tensors)
    n_chunks = chunk_tensor.numel()
    bc1, bc2 = lamb_bias_corrections(beta1, beta2, step, bias_correction)
    part = torch.empty(n_chunks, 2, dtype=torch.float32, device=device)
    _lamb_phase1_kernel[(n_chunks,)](chunk_tensor, chunk_start, numel, addrs[0], addrs[1], addrs[2], addrs[3], part,
                                     beta1, beta2, eps, weight_decay, bc1, bc2, G_DTYPE=_TL_DTYPES[gdtype],
                                     BLOCK=block, num_warps=8)
    # per-tensor sums of the partials: differences of an fp64 inclusive scan at each tensor's last chunk
    csum = torch.cumsum(part.double(), 0)  # (n_chunks, 2)
    ends = csum[lasts]
    normsq = (ends - torch.cat([ends.new_zeros(1, 2), ends[:-1]])).float().contiguous()  # (n_tensors, 2)
    _lamb_phase2_kernel[(n_chunks,)](chunk_tensor, chunk_start, numel, addrs[0], addrs[2], addrs[3], normsq, lr, eps,
                                     weight_decay, bc1, bc2, max_trust_ratio or 0.0,
                                     CLAMP=max_trust_ratio is not None, BLOCK=block, num_warps=8)
