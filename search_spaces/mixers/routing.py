"""Bi-level routing attention (BiFormer): route each region to its top-k regions, attend to their tokens."""

from __future__ import annotations

import torch
import torch.nn as nn

import kernels
from search_spaces.mixer import Mixer
from search_spaces.mixers.rules import topk_within_regions


def _largest_divisor_at_most(n: int, k: int) -> int:
    return max(d for d in range(1, min(n, k) + 1) if n % d == 0)


class BiLevelRoutingAttention(Mixer):
    """Bi-level routing attention (Zhu et al., CVPR 2023, BiFormer).

    The tokens are cut into R = S x S regions: an S x S partition of the (H, W) grid, or R contiguous
    chunks of a 1-D sequence. Coarse level: region queries and keys are the means of their tokens'
    Q and K; the region affinity Q_r K_r^T picks, for each region, its top-k regions (the selection
    is not differentiable; gradients reach Q and K through the token level). Fine level: every query
    token attends to all tokens of its region's k routed regions (gathered K/V, dense attention).
    With topk = R this is full attention. When a side is not divisible by S, the largest divisor
    below S is used for that side (down to 1 region = full attention along it). The local context
    enhancement (depthwise conv on V) of BiFormer is left to a ``conv`` mixer. Non-causal only: a
    region's routing uses tokens after the query.
    """

    def __init__(self, dim: int, *, causal: bool = False, heads: int = 4, regions: int = 2, topk: int = 2,
                 qkv_bias: bool = False):
        super().__init__(dim, causal=causal)
        err = topk_within_regions(dim, {"regions": regions, "topk": topk})
        if dim % heads or err:
            raise ValueError(err[1] if err else f"heads {heads} does not divide dim {dim}")
        self.heads, self.head_dim, self.regions, self.topk = heads, dim // heads, regions, topk
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def _layout(self, N: int, hw):
        """Token order that lists regions one after another: (perm, R, T) with perm (N,) indices."""
        if hw is None:
            r = _largest_divisor_at_most(N, self.regions * self.regions)
            return None, r, N // r
        H, W = hw
        sh, sw = _largest_divisor_at_most(H, self.regions), _largest_divisor_at_most(W, self.regions)
        grid = torch.arange(H * W).view(sh, H // sh, sw, W // sw)  # (sh, rh, sw, rw)
        return grid.permute(0, 2, 1, 3).reshape(-1), sh * sw, (H // sh) * (W // sw)

    def forward(self, x, hw=None):
        B, N, C = x.shape
        h, hd = self.heads, self.head_dim
        perm, R, T = self._layout(N, hw)
        qkv = self.qkv(x)  # (B, N, 3C)
        if perm is not None:
            perm = perm.to(x.device)
            qkv = qkv[:, perm]  # region-major token order
        q, k, v = qkv.view(B, R, T, 3, C).unbind(3)  # (B, R, T, C) each
        k_sel = min(self.topk, R)
        with torch.no_grad():  # coarse routing on region means
            affinity = q.mean(2) @ k.mean(2).transpose(-1, -2)  # (B, R, R)
            idx = affinity.topk(k_sel, dim=-1).indices  # (B, R, k)
        gidx = idx.view(B, R, k_sel, 1, 1).expand(B, R, k_sel, T, C)

        def gather(t):  # (B, R, T, C) -> routed tokens (B*R, h, k*T, hd)
            t = t.unsqueeze(1).expand(B, R, R, T, C).gather(2, gidx)  # (B, R, k, T, C)
            return t.reshape(B * R, k_sel * T, h, hd).transpose(1, 2)

        qh = q.reshape(B * R, T, h, hd).transpose(1, 2)  # (B*R, h, T, hd)
        y = kernels.attention(qh, gather(k), gather(v))  # (B*R, h, T, hd)
        y = y.transpose(1, 2).reshape(B, N, C)  # region-major order
        if perm is not None:
            y = y[:, torch.argsort(perm)]  # back to raster order
        return self.proj(y)
