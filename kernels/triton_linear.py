"""Triton kernels for linear attention on feature-mapped q, k (see ``kernels.linear``).

Non-causal, two passes:
  1. ``_state_kernel``: per (batch*head, D block, Dv block) the state S = K^T V (D, Dv) and the
     key sum z = sum_n k_n (D), accumulated over the sequence in fp32.
  2. ``_apply_kernel``: per (row block, batch*head, Dv block) out = (Q S) / (Q z + eps).
Causal, chunked (``_causal_kernel``): per (batch*head, Dv block) walk the sequence in chunks of C;
inside a chunk the masked quadratic form tril(Q_c K_c^T) V_c, plus Q_c S for all earlier chunks,
then S += K_c^T V_c and z += sum K_c. Memory O(D Dv) per program instead of O(N D Dv).

Forward only: with gradients required the public op uses its PyTorch path.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["linear_attention_triton", "supports", "KERNELS", "MAX_CAUSAL_HEAD_DIM"]

MAX_CAUSAL_HEAD_DIM = 128  # the causal kernel keeps the whole (D, Dv block) state in registers
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@triton.jit
def _state_kernel(K, V, S, Z, skb, skh, skn, svb, svh, svn, H, N, D, DV,
                  BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    pid_bh = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_v = tl.program_id(2)
    b = pid_bh // H
    h = pid_bh % H
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_v = pid_v * BLOCK_DV + tl.arange(0, BLOCK_DV)
    s = tl.zeros((BLOCK_D, BLOCK_DV), tl.float32)
    z = tl.zeros((BLOCK_D,), tl.float32)
    for n0 in range(0, N, BLOCK_N):
        rows = n0 + tl.arange(0, BLOCK_N)
        k = tl.load(K + b * skb + h * skh + rows[:, None] * skn + offs_d[None, :],
                    mask=(rows[:, None] < N) & (offs_d[None, :] < D), other=0.0)  # (BN, BD)
        v = tl.load(V + b * svb + h * svh + rows[:, None] * svn + offs_v[None, :],
                    mask=(rows[:, None] < N) & (offs_v[None, :] < DV), other=0.0)  # (BN, BDV)
        s += tl.dot(tl.trans(k), v)
        z += tl.sum(k.to(tl.float32), 0)
    tl.store(S + pid_bh * D * DV + offs_d[:, None] * DV + offs_v[None, :], s,
             mask=(offs_d[:, None] < D) & (offs_v[None, :] < DV))
    if pid_v == 0:
        tl.store(Z + pid_bh * D + offs_d, z, mask=offs_d < D)


@triton.jit
def _apply_kernel(Q, S, Z, O, sqb, sqh, sqn, sob, soh, son, H, N, D, DV, eps,
                  BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_v = tl.program_id(2)
    b = pid_bh // H
    h = pid_bh % H
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_v = pid_v * BLOCK_DV + tl.arange(0, BLOCK_DV)
    num = tl.zeros((BLOCK_M, BLOCK_DV), tl.float32)
    den = tl.zeros((BLOCK_M,), tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqn + offs_d[None, :],
                    mask=(rows[:, None] < N) & (offs_d[None, :] < D), other=0.0).to(tl.float32)
        s = tl.load(S + pid_bh * D * DV + offs_d[:, None] * DV + offs_v[None, :],
                    mask=(offs_d[:, None] < D) & (offs_v[None, :] < DV), other=0.0)
        z = tl.load(Z + pid_bh * D + offs_d, mask=offs_d < D, other=0.0)
        num += tl.dot(q, s)
        den += tl.sum(q * z[None, :], 1)
    out = num / (den + eps)[:, None]
    tl.store(O + b * sob + h * soh + rows[:, None] * son + offs_v[None, :], out.to(O.dtype.element_ty),
             mask=(rows[:, None] < N) & (offs_v[None, :] < DV))


@triton.jit
def _causal_kernel(Q, K, V, O, sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son,
                   H, N, D, DV, eps,
                   BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    pid_bh = tl.program_id(0)
    pid_v = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_d = tl.arange(0, BLOCK_D)
    offs_v = pid_v * BLOCK_DV + tl.arange(0, BLOCK_DV)
    offs_c = tl.arange(0, BLOCK_C)
    tri = offs_c[:, None] >= offs_c[None, :]  # (C, C) causal mask inside a chunk
    s = tl.zeros((BLOCK_D, BLOCK_DV), tl.float32)  # state of all earlier chunks
    z = tl.zeros((BLOCK_D,), tl.float32)
    for n0 in range(0, N, BLOCK_C):
        rows = n0 + offs_c
        row_ok = rows[:, None] < N
        q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqn + offs_d[None, :],
                    mask=row_ok & (offs_d[None, :] < D), other=0.0)  # (C, BD)
        k = tl.load(K + b * skb + h * skh + rows[:, None] * skn + offs_d[None, :],
                    mask=row_ok & (offs_d[None, :] < D), other=0.0)
        v = tl.load(V + b * svb + h * svh + rows[:, None] * svn + offs_v[None, :],
                    mask=row_ok & (offs_v[None, :] < DV), other=0.0)  # (C, BDV)
        a = tl.where(tri, tl.dot(q, tl.trans(k)), 0.0)  # (C, C) fp32
        qf = q.to(tl.float32)
        num = tl.dot(a.to(v.dtype), v) + tl.dot(qf, s)
        den = tl.sum(a, 1) + tl.sum(qf * z[None, :], 1)
        out = num / (den + eps)[:, None]
        tl.store(O + b * sob + h * soh + rows[:, None] * son + offs_v[None, :], out.to(O.dtype.element_ty),
                 mask=row_ok & (offs_v[None, :] < DV))
        s += tl.dot(tl.trans(k.to(tl.float32)), v.to(tl.float32))
        z += tl.sum(k.to(tl.float32), 0)


KERNELS = (_state_kernel, _apply_kernel, _causal_kernel)  # the kernels it launches (interpreted without CUDA)


def _pow2(x: int) -> int:
    return max(16, triton.next_power_of_2(x))


def supports(q, k, v, *, causal: bool) -> str | None:
    """``None`` if the Triton kernels take these tensors, else the reason they do not."""
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in _DTYPES:
        return f"dtypes {q.dtype}, {k.dtype}, {v.dtype} (need one of fp16/bf16/fp32 for all)"
    if causal and q.shape[-1] > MAX_CAUSAL_HEAD_DIM:
        return f"causal kernel supports D <= {MAX_CAUSAL_HEAD_DIM}, got {q.shape[-1]}"
    return None


def linear_attention_triton(q, k, v, *, causal: bool = False, eps: float = 1e-6):
    """Forward of :func:`kernels.linear.linear_attention_reference` in Triton (shapes checked by the caller)."""
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    B, H, N, D = q.shape
    DV = v.shape[-1]
    o = torch.empty((B, H, N, DV), device=q.device, dtype=v.dtype)
    small = not q.is_cuda  # tiny tiles under the CPU interpreter
    BDV = min(_pow2(DV), 16 if small else 64)
    if causal:
        BC = 16 if small else 64
        _causal_kernel[(B * H, triton.cdiv(DV, BDV))](
            q, k, v, o, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3],
            H, N, D, DV, float(eps), BLOCK_C=BC, BLOCK_D=_pow2(D), BLOCK_DV=BDV, num_warps=1 if small else 4)
        return o
    BD = min(_pow2(D), 16 if small else 64)
    BN = 16 if small else 64
    s = torch.empty((B * H, D, DV), device=q.device, dtype=torch.float32)
    z = torch.empty((B * H, D), device=q.device, dtype=torch.float32)
    _state_kernel[(B * H, triton.cdiv(D, BD), triton.cdiv(DV, BDV))](
        k, v, s, z, *k.stride()[:3], *v.stride()[:3], H, N, D, DV,
        BLOCK_N=BN, BLOCK_D=BD, BLOCK_DV=BDV, num_warps=1 if small else 4)
    BM = 16 if small else 64
    _apply_kernel[(triton.cdiv(N, BM), B * H, triton.cdiv(DV, BDV))](
        q, s, z, o, *q.stride()[:3], *o.stride()[:3], H, N, D, DV, float(eps),
        BLOCK_M=BM, BLOCK_D=BD, BLOCK_DV=BDV, num_warps=1 if small else 4)
    return o
