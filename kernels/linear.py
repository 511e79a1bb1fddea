"""Kernelized (linear) attention on feature-mapped queries and keys: reference and op.

Inputs are already feature-mapped (e.g. elu(x) + 1 >= 0): q, k (B, H, N, D), v (B, H, N, Dv).
Non-causal: out_i = q_i (sum_j k_j^T v_j) / (q_i . sum_j k_j + eps).
Causal:     out_i = q_i (sum_{j<=i} k_j^T v_j) / (q_i . sum_{j<=i} k_j + eps)  (prefix sums).
"""

from __future__ import annotations

import torch

from kernels._dispatch import record

__all__ = ["linear_attention", "linear_attention_reference"]


def _check(q, k, v):
    if q.dim() != 4 or q.shape != k.shape or q.shape[:3] != v.shape[:3]:
        raise ValueError(f"linear_attention expects q, k of equal (B, H, N, D) and v (B, H, N, Dv); "
                         f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")


def linear_attention_reference(q, k, v, *, causal: bool = False, eps: float = 1e-6):
    """Quadratic form of the same computation: (q k^T, causally masked) v, row-normalized."""
    _check(q, k, v)
    a = (q @ k.transpose(-2, -1)).float()  # (B, H, N, N)
    if causal:
        a = a.tril()
    return ((a @ v.float()) / (a.sum(-1, keepdim=True) + eps)).to(v.dtype)


def linear_attention(q, k, v, *, causal: bool = False, eps: float = 1e-6):
    """Linear-time attention. Non-causal: two matmuls through the (D, Dv) state. Causal:
    cumulative sums of k_j^T v_j (memory O(N D Dv)); ``last_path`` says which ran."""
    _check(q, k, v)
    qf, kf, vf = q.float(), k.float(), v.float()
    if causal:
        kv = torch.einsum("bhnd,bhne->bhnde", kf, vf).cumsum(dim=2)  # (B, H, N, D, Dv)
        num = torch.einsum("bhnd,bhnde->bhne", qf, kv)
        den = (qf * kf.cumsum(dim=2)).sum(-1, keepdim=True)
        record("linear_attention", "torch_cumsum")
    else:
        kv = kf.transpose(-2, -1) @ vf  # (B, H, D, Dv)
        num = qf @ kv
        den = qf @ kf.sum(dim=2, keepdim=True).transpose(-2, -1)  # (B, H, N, 1)
        record("linear_attention", "torch_matmul")
    return (num / (den + eps)).to(v.dtype)
