"""Sliding-window (neighborhood) attention in 1-D, with dilation: reference and dispatching op.

Window rule: query i attends to keys j = i + dilation * t for integer t with |t| <= window // 2
(non-causal) or -(window - 1) <= t <= 0 (causal), clipped to [0, N). ``window`` counts the
keys on the full window (odd when non-causal). Keys outside the window get zero weight.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kernels._dispatch import needs_grad, record, wants_triton

__all__ = ["local_attention", "local_attention_reference", "local_mask"]


def local_mask(n: int, *, window: int, dilation: int = 1, causal: bool = False, device=None) -> torch.Tensor:
    """Boolean (N, N) mask: True where query i may attend to key j."""
    if window < 1 or dilation < 1:
        raise ValueError(f"window and dilation must be >= 1, got window={window}, dilation={dilation}")
    i = torch.arange(n, device=device)[:, None]
    j = torch.arange(n, device=device)[None, :]
    off = j - i
    on_grid = (off % dilation) == 0
    t = off // dilation
    if causal:
        inside = (t <= 0) & (t >= -(window - 1))
    else:
        inside = t.abs() <= window // 2
    return on_grid & inside


def _check(q, k, v):
    if q.dim() != 4 or q.shape != k.shape or q.shape[:3] != v.shape[:3]:
        raise ValueError(f"local_attention expects q, k of equal (B, H, N, D) and v (B, H, N, Dv); "
                         f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")


def local_attention_reference(q, k, v, *, window: int, dilation: int = 1, causal: bool = False, scale=None):
    """Naive: full score matrix, masked outside the window. (B, H, N, D) -> (B, H, N, Dv)."""
    _check(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ k.transpose(-2, -1)).float() * scale  # (B, H, N, N)
    mask = local_mask(q.shape[2], window=window, dilation=dilation, causal=causal, device=q.device)
    s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-1).to(v.dtype) @ v


def local_attention(q, k, v, *, window: int, dilation: int = 1, causal: bool = False, scale=None,
                    backend: str | None = None):
    """Sliding-window attention (see module docstring for the window rule).

    Dispatch (``backend=None``): CUDA tensors go to the Triton kernel (``kernels.triton_attention``
    in window mode: visits only the key blocks that meet the window, no N x N mask; with
    gradients required, head dims up to 256); everything else to SDPA with a boolean window mask.
    CPU stays on SDPA even under ``TRITON_INTERPRET=1``; ``backend="triton"`` forces the kernel,
    ``backend="torch"`` forces SDPA. ``kernels.last_path("local_attention")`` reports
    ``"triton"`` or ``"sdpa_masked"``.
    """
    _check(q, k, v)
    if window < 1 or dilation < 1:
        raise ValueError(f"window and dilation must be >= 1, got window={window}, dilation={dilation}")
    if wants_triton("local_attention", backend, q, k, v):
        from kernels import triton_attention

        reason = triton_attention.supports(q, k, v, needs_grad=needs_grad(q, k, v))
        if reason is None:
            record("local_attention", "triton")
            return triton_attention.flash_attention(q, k, v, causal=causal, scale=scale,
                                                    window=window, dilation=dilation)
        if backend == "triton":
            raise ValueError(f"local_attention: the Triton kernel does not take this input: {reason}")
    mask = local_mask(q.shape[2], window=window, dilation=dilation, causal=causal, device=q.device)
    record("local_attention", "sdpa_masked")
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
