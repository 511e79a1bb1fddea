"""Triton kernels for softmax attention: flash-style forward (online softmax) and backward.

One kernel family serves both global attention (``kernels.attention``) and 1-D sliding-window
attention (``kernels.local_attention``). A query row ``i`` may see key ``j`` iff, with
``ii = i // dil``, ``jj = j // dil`` and ``i % dil == j % dil``::

    lo_off <= jj - ii <= hi_off

Dilation is handled by splitting the sequence into ``dil`` residue classes (a program works on
one class, rows ``r, r + dil, ...``), so inside a class the window is a plain band and each
program only visits the key blocks that intersect it: no N x N map is ever formed.

Head dims: the QK^T product is accumulated over chunks of ``BLOCK_D`` (so D up to 512 works) and
the value dim is split across programs (grid axis 2), so Dv up to 512 works. The backward
kernels hold a whole head in one chunk (BLOCK_D >= D, BLOCK_DV >= Dv) and take D, Dv <= 256,
with smaller tiles above 128 (see ``_bwd_blocks``); wider heads fall back to PyTorch for gradients.

Importing this module imports triton; ``kernels`` only imports it on demand.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

__all__ = ["flash_attention", "supports", "KERNELS", "MAX_HEAD_DIM", "MAX_BWD_HEAD_DIM"]

MAX_HEAD_DIM = 512
MAX_BWD_HEAD_DIM = 256
_LOG2E = 1.4426950408889634
_NEG = -1.0e30  # finite "minus infinity" for the running max: fully masked rows stay NaN-free
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@triton.jit
def _band_mask(ii, jj, m_sub, lo_off, hi_off, MASKED: tl.constexpr):
    valid = jj[None, :] < m_sub
    if MASKED:
        rel = jj[None, :] - ii[:, None]
        valid = valid & (rel >= lo_off) & (rel <= hi_off)
    return valid


@triton.jit
def _fwd_kernel(Q, K, V, O, LSE,
                sqb, sqh, sqn, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sob, soh, son, sod,
                H, GROUP, N, M, D, DV, scale_log2, lo_off, hi_off,
                DIL: tl.constexpr, MASKED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_D: tl.constexpr, NUM_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_v = tl.program_id(2)
    r = pid_m % DIL  # residue class of this program's rows and keys
    m0 = (pid_m // DIL) * BLOCK_M
    b = pid_bh // H
    h = pid_bh % H
    hk = h // GROUP  # grouped K/V: K/V head serving this query head
    n_sub = (N - r + DIL - 1) // DIL
    m_sub = (M - r + DIL - 1) // DIL

    ii = m0 + tl.arange(0, BLOCK_M)  # (BM,) row index inside the residue class
    row_ok = ii < n_sub
    offs_d = tl.arange(0, BLOCK_D)
    offs_v = pid_v * BLOCK_DV + tl.arange(0, BLOCK_DV)
    q_base = Q + b * sqb + h * sqh + (r + DIL * ii)[:, None] * sqn
    k_base = K + b * skb + hk * skh
    v_base = V + b * svb + hk * svh

    q0 = tl.load(q_base + offs_d[None, :] * sqd, mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0)
    m_i = tl.full((BLOCK_M,), _NEG, tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), tl.float32)

    lo = tl.maximum(m0 + lo_off, 0)
    hi = tl.minimum(m0 + BLOCK_M + hi_off, m_sub)
    for n0 in range(lo, hi, BLOCK_N):
        jj = n0 + tl.arange(0, BLOCK_N)  # (BN,)
        key_rows = (r + DIL * jj)[:, None]
        k = tl.load(k_base + key_rows * skn + offs_d[None, :] * skd,
                    mask=(jj[:, None] < m_sub) & (offs_d[None, :] < D), other=0.0)
        s = tl.dot(q0, tl.trans(k))  # (BM, BN)
        for c in tl.static_range(1, NUM_D):  # wide heads: accumulate QK^T chunk by chunk
            od = c * BLOCK_D + offs_d
            qc = tl.load(q_base + od[None, :] * sqd, mask=row_ok[:, None] & (od[None, :] < D), other=0.0)
            kc = tl.load(k_base + key_rows * skn + od[None, :] * skd,
                         mask=(jj[:, None] < m_sub) & (od[None, :] < D), other=0.0)
            s += tl.dot(qc, tl.trans(kc))
        s = s * scale_log2
        s = tl.where(_band_mask(ii, jj, m_sub, lo_off, hi_off, MASKED), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + key_rows * svn + offs_v[None, :] * svd,
                    mask=(jj[:, None] < m_sub) & (offs_v[None, :] < DV), other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new

    empty = l_i == 0.0  # rows that see no key (possible with bottom-right causal and N > M)
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    o_ptr = O + b * sob + h * soh + (r + DIL * ii)[:, None] * son + offs_v[None, :] * sod
    tl.store(o_ptr, out.to(O.dtype.element_ty), mask=row_ok[:, None] & (offs_v[None, :] < DV))
    if pid_v == 0:  # log2-sum-exp per row, for the backward; +inf makes p = 0 on empty rows
        lse = tl.where(empty, float("inf"), m_i + tl.log2(tl.where(empty, 1.0, l_i)))
        tl.store(LSE + pid_bh * N + r + DIL * ii, lse, mask=row_ok)


@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ,
                   sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdb, sdh, sdn,
                   H, GROUP, N, M, D, DV, scale_log2, scale, lo_off, hi_off,
                   DIL: tl.constexpr, MASKED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    # q and dq share strides (sq*), k (sk*), v (sv*), do (sd*); the last dims are contiguous.
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    r = pid_m % DIL
    m0 = (pid_m // DIL) * BLOCK_M
    b = pid_bh // H
    h = pid_bh % H
    hk = h // GROUP
    n_sub = (N - r + DIL - 1) // DIL
    m_sub = (M - r + DIL - 1) // DIL
    ii = m0 + tl.arange(0, BLOCK_M)
    row_ok = ii < n_sub
    offs_d = tl.arange(0, BLOCK_D)
    offs_v = tl.arange(0, BLOCK_DV)
    rows = (r + DIL * ii)[:, None]
    q_off = b * sqb + h * sqh + rows * sqn + offs_d[None, :]
    q = tl.load(Q + q_off, mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + rows * sdn + offs_v[None, :],
                 mask=row_ok[:, None] & (offs_v[None, :] < DV), other=0.0)
    lse = tl.load(LSE + pid_bh * N + r + DIL * ii, mask=row_ok, other=float("inf"))
    delta = tl.load(DELTA + pid_bh * N + r + DIL * ii, mask=row_ok, other=0.0)
    dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    lo = tl.maximum(m0 + lo_off, 0)
    hi = tl.minimum(m0 + BLOCK_M + hi_off, m_sub)
    for n0 in range(lo, hi, BLOCK_N):
        jj = n0 + tl.arange(0, BLOCK_N)
        key_rows = (r + DIL * jj)[:, None]
        k = tl.load(K + b * skb + hk * skh + key_rows * skn + offs_d[None, :],
                    mask=(jj[:, None] < m_sub) & (offs_d[None, :] < D), other=0.0)
        v = tl.load(V + b * svb + hk * svh + key_rows * svn + offs_v[None, :],
                    mask=(jj[:, None] < m_sub) & (offs_v[None, :] < DV), other=0.0)
        s = tl.dot(q, tl.trans(k)) * scale_log2
        p = tl.exp2(s - lse[:, None])
        p = tl.where(_band_mask(ii, jj, m_sub, lo_off, hi_off, MASKED), p, 0.0)
        dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k)
    tl.store(DQ + q_off, (dq * scale).to(DQ.dtype.element_ty), mask=row_ok[:, None] & (offs_d[None, :] < D))


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV_,
                     sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdb, sdh, sdn,
                     H, GROUP, N, M, D, DV, scale_log2, scale, lo_off, hi_off,
                     DIL: tl.constexpr, MASKED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    # One program owns a block of keys of one K/V head and sums over the GROUP query heads
    # that share it, so no atomics are needed. dk shares k's strides, dv shares v's.
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)  # b * Hkv + hk
    HK = H // GROUP
    r = pid_n % DIL
    n0 = (pid_n // DIL) * BLOCK_N
    b = pid_bh // HK
    hk = pid_bh % HK
    n_sub = (N - r + DIL - 1) // DIL
    m_sub = (M - r + DIL - 1) // DIL
    jj = n0 + tl.arange(0, BLOCK_N)
    key_ok = jj < m_sub
    offs_d = tl.arange(0, BLOCK_D)
    offs_v = tl.arange(0, BLOCK_DV)
    key_rows = (r + DIL * jj)[:, None]
    k_off = b * skb + hk * skh + key_rows * skn + offs_d[None, :]
    v_off = b * svb + hk * svh + key_rows * svn + offs_v[None, :]
    k = tl.load(K + k_off, mask=key_ok[:, None] & (offs_d[None, :] < D), other=0.0)
    v = tl.load(V + v_off, mask=key_ok[:, None] & (offs_v[None, :] < DV), other=0.0)
    dk = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_DV), tl.float32)
    lo = tl.maximum(n0 - hi_off, 0)  # query rows ii with lo_off <= jj - ii <= hi_off
    hi = tl.minimum(n0 + BLOCK_N - lo_off, n_sub)
    for g in range(GROUP):
        h = hk * GROUP + g
        for m0 in range(lo, hi, BLOCK_M):
            ii = m0 + tl.arange(0, BLOCK_M)
            row_ok = ii < n_sub
            rows = (r + DIL * ii)[:, None]
            q = tl.load(Q + b * sqb + h * sqh + rows * sqn + offs_d[None, :],
                        mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0)
            do = tl.load(DO + b * sdb + h * sdh + rows * sdn + offs_v[None, :],
                         mask=row_ok[:, None] & (offs_v[None, :] < DV), other=0.0)
            lse = tl.load(LSE + (b * H + h) * N + r + DIL * ii, mask=row_ok, other=float("inf"))
            delta = tl.load(DELTA + (b * H + h) * N + r + DIL * ii, mask=row_ok, other=0.0)
            s = tl.dot(q, tl.trans(k)) * scale_log2  # (BM, BN)
            p = tl.exp2(s - lse[:, None])
            p = tl.where(_band_mask(ii, jj, m_sub, lo_off, hi_off, MASKED) & row_ok[:, None], p, 0.0)
            dv += tl.dot(tl.trans(p.to(do.dtype)), do)
            dp = tl.dot(do, tl.trans(v))
            ds = p * (dp - delta[:, None])
            dk += tl.dot(tl.trans(ds.to(q.dtype)), q)
    tl.store(DK + k_off, (dk * scale).to(DK.dtype.element_ty), mask=key_ok[:, None] & (offs_d[None, :] < D))
    tl.store(DV_ + v_off, dv.to(DV_.dtype.element_ty), mask=key_ok[:, None] & (offs_v[None, :] < DV))


KERNELS = (_fwd_kernel, _bwd_dq_kernel, _bwd_dkdv_kernel)  # the kernels it launches (interpreted without CUDA)


def _pow2(x: int, low: int = 16) -> int:
    return max(low, triton.next_power_of_2(x))


def _blocks(x: torch.Tensor, d: int, dv: int):
    """(BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, num_warps). Tiny tiles under the CPU interpreter."""
    if not x.is_cuda:
        return 16, 16, min(_pow2(d), 128), min(_pow2(dv), 128), 1
    if max(d, dv) <= 64:
        return 128, 64, _pow2(d), _pow2(dv), 4
    if max(d, dv) <= 128:
        return 128, 64, _pow2(d), _pow2(dv), 8
    return 64, 32, min(_pow2(d), 256), min(_pow2(dv), 128), 4


def _bwd_blocks(x: torch.Tensor, d: int, dv: int) -> dict:
    """Launch parameters of the backward kernels, which keep a whole head per tile (BLOCK_D >= D).

    Up to D = 128 as before: 64 x 64 tiles, Triton's default pipelining. For 128 < D <= 256 the
    head is padded to 256 and the tiles shrink to 32 x 32. Budget of one program of the heavier
    kernel (dk/dv; dq holds one accumulator and swaps the roles of the tiles), fp16/bf16:
    registers hold the fp32 accumulators dk and dv, 2 x 32 x 256 x 4 B = 64 KB, i.e. 64 registers
    per thread over 8 warps (with 64 x 64 tiles it would be 128 per thread before any operand or
    temporary: spills); shared memory holds the k and v tiles (2 x 32 x 256 x 2 B = 32 KB) and,
    double-buffered (num_stages=2), the q and dO tiles of each step (2 x 2 x 16 KB = 64 KB): about
    100 KB, under the 164 KB of an A100 and the 227 KB of an H100. fp32 inputs double every tile,
    so they get no pipelining (num_stages=1): 4 x 32 KB = 128 KB. Not yet measured on a GPU.
    Under the CPU interpreter: 16 x 16 tiles.
    """
    meta = {"BLOCK_D": _pow2(d), "BLOCK_DV": _pow2(dv)}
    if not x.is_cuda:
        return dict(meta, BLOCK_M=16, BLOCK_N=16, num_warps=1)
    if max(d, dv) <= 128:
        return dict(meta, BLOCK_M=64, BLOCK_N=64, num_warps=4 if max(d, dv) <= 64 else 8)
    return dict(meta, BLOCK_M=32, BLOCK_N=32, num_warps=8, num_stages=1 if x.dtype == torch.float32 else 2)


def supports(q, k, v, *, needs_grad: bool = False) -> str | None:
    """``None`` if the Triton kernels take these tensors, else the reason they do not."""
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in _DTYPES:
        return f"dtypes {q.dtype}, {k.dtype}, {v.dtype} (need one of fp16/bf16/fp32 for all)"
    if max(q.shape[-1], v.shape[-1]) > MAX_HEAD_DIM:
        return f"head dims {q.shape[-1]}/{v.shape[-1]} exceed {MAX_HEAD_DIM}"
    if needs_grad and max(q.shape[-1], v.shape[-1]) > MAX_BWD_HEAD_DIM:
        return f"backward supports head dims <= {MAX_BWD_HEAD_DIM}, got {q.shape[-1]}/{v.shape[-1]}"
    return None


def _band(n: int, m: int, causal: bool, window: int | None):
    """(lo_off, hi_off, masked) in residue-class units, so the same for every dilation; see the
    module docstring."""
    if window is None:
        far = n + m  # further than any row-key distance: no limit on that side
        if causal:
            return -far, m - n, True  # bottom-right aligned, as in attention_reference
        return -far, far, False
    if causal:
        return -(window - 1), 0, True
    return -(window // 2), window // 2, True


def _forward(q, k, v, scale, band, dil):
    B, H, N, D = q.shape
    M, DV = k.shape[2], v.shape[3]
    lo_off, hi_off, masked = band
    BM, BN, BD, BDV, warps = _blocks(q, D, DV)
    o = torch.empty((B, H, N, DV), device=q.device, dtype=q.dtype)
    lse = torch.empty((B, H, N), device=q.device, dtype=torch.float32)
    grid = (dil * triton.cdiv(triton.cdiv(N, dil), BM), B * H, triton.cdiv(DV, BDV))
    _fwd_kernel[grid](q, k, v, o, lse, *q.stride(), *k.stride(), *v.stride(), *o.stride(),
                      H, H // k.shape[1], N, M, D, DV, scale * _LOG2E, lo_off, hi_off,
                      DIL=dil, MASKED=masked, BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=BD,
                      NUM_D=triton.cdiv(D, BD), BLOCK_DV=BDV, num_warps=warps)
    return o, lse


def _backward(q, k, v, o, lse, do, scale, band, dil):
    q, k, v, do = (t.contiguous() for t in (q, k, v, do))  # kernels assume a unit last stride
    B, H, N, D = q.shape
    HK, M, DV = k.shape[1], k.shape[2], v.shape[3]
    lo_off, hi_off, masked = band
    meta = dict(DIL=dil, MASKED=masked, **_bwd_blocks(q, D, DV))
    BM, BN = meta["BLOCK_M"], meta["BLOCK_N"]
    delta = (o.float() * do.float()).sum(-1)  # (B, H, N) rowsum(dO * O)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    args = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3],
            H, H // HK, N, M, D, DV, scale * _LOG2E, scale, lo_off, hi_off)
    _bwd_dq_kernel[(dil * triton.cdiv(triton.cdiv(N, dil), BM), B * H)](
        q, k, v, do, lse, delta, dq, *args, **meta)
    _bwd_dkdv_kernel[(dil * triton.cdiv(triton.cdiv(M, dil), BN), B * HK)](
        q, k, v, do, lse, delta, dk, dv, *args, **meta)
    return dq, dk, dv


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, band, dil):
        o, lse = _forward(q, k, v, scale, band, dil)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.meta = (scale, band, dil)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        if max(q.shape[-1], v.shape[-1]) > MAX_BWD_HEAD_DIM:
            raise NotImplementedError(f"Triton attention backward needs head dims <= {MAX_BWD_HEAD_DIM}")
        dq, dk, dv = _backward(q, k, v, o, lse, do, *ctx.meta)
        return dq, dk, dv, None, None, None


def flash_attention(q, k, v, *, causal: bool = False, scale: float | None = None,
                    window: int | None = None, dilation: int = 1):
    """Fused attention. q (B, Hq, N, D); k (B, Hkv, M, D); v (B, Hkv, M, Dv); Hkv divides Hq.

    ``window=None``: global attention (causal is bottom-right aligned when N != M).
    ``window=w``: 1-D sliding window with ``dilation`` (needs N == M), the rule of
    ``kernels.local``. Shapes are assumed checked by the caller.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    dil = 1 if window is None else int(dilation)
    band = _band(q.shape[2], k.shape[2], causal, window)
    return _FlashAttention.apply(q, k, v, scale, band, dil)
