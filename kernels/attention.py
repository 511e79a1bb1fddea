"""Scaled dot-product attention: reference and dispatching op."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kernels._dispatch import record

__all__ = ["attention", "attention_reference"]


def _check(q, k, v):
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"attention expects (B, H, N, D) tensors, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[0] != k.shape[0] or k.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"attention shapes do not match: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"query heads {q.shape[1]} are not a multiple of key/value heads {k.shape[1]}")


def attention_reference(q, k, v, *, causal: bool = False, scale: float | None = None):
    """Naive softmax(Q K^T * scale) V. q: (B, Hq, N, D); k, v: (B, Hkv, M, D[v]); Hkv divides Hq."""
    _check(q, k, v)
    rep = q.shape[1] // k.shape[1]
    if rep > 1:  # grouped K/V: each K/V head serves `rep` consecutive query heads
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ k.transpose(-2, -1)) * scale  # (B, H, N, M)
    if causal:
        n, m = s.shape[-2:]
        mask = torch.ones(n, m, dtype=torch.bool, device=s.device).tril(m - n)
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s.float(), dim=-1).to(v.dtype) @ v


def attention(q, k, v, *, causal: bool = False, scale: float | None = None):
    """Softmax attention, (B, Hq, N, D) x (B, Hkv, M, D) -> (B, Hq, N, Dv).

    Dispatch: PyTorch's ``scaled_dot_product_attention`` (which picks flash / memory-efficient /
    math backends by device). ``kernels.last_path("attention")`` reports the path taken.
    """
    _check(q, k, v)
    rep = q.shape[1] // k.shape[1]
    if rep > 1:
        k = k.repeat_interleave(rep, dim=1)  # (B, Hq, M, D)
        v = v.repeat_interleave(rep, dim=1)
    record("attention", "sdpa")
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
