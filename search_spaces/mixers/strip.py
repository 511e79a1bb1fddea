"""Strip self-attention (S2AFormer): spatially reduced K/V and channel-compressed Q/K."""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

import kernels
from search_spaces.mixer import Mixer
from search_spaces.mixers.rules import strip_heads_rule


class StripSelfAttention(Mixer):
    """Strip self-attention (S2AFormer, 2025): cheap attention by shrinking both sides of Q K^T.

    K and V are computed from a spatially reduced copy of the tokens: ``sr`` x ``sr`` average pooling
    over the (H, W) grid (``sr`` along the sequence when ``hw`` is None; a partial window at the
    edge averages what it covers), then LayerNorm (PVTv2-style reduction; S2AFormer's own reduction
    operator may differ). Q and K are projected to a compressed
    width, ``head_dim / qk_ratio`` per head, while V keeps ``head_dim``. Score cost:
    N * (N / sr^2) * dim / qk_ratio on a grid. Non-causal: a reduced token mixes several positions.
    """

    def __init__(self, dim: int, *, causal: bool = False, heads: int = 2, sr: int = 2, qk_ratio: int = 2):
        super().__init__(dim, causal=causal)
        err = strip_heads_rule(dim, {"heads": heads, "qk_ratio": qk_ratio})
        if err:
            raise ValueError(err[1])
        self.heads, self.sr = heads, sr
        self.head_dim = dim // heads
        self.qk_dim = self.head_dim // qk_ratio
        self.q = nn.Linear(dim, heads * self.qk_dim)
        self.norm = nn.LayerNorm(dim) if sr > 1 else None
        self.k = nn.Linear(dim, heads * self.qk_dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def reduced(self, x, hw=None):
        """The K/V source tokens (B, M, C): M = ceil(H/sr) * ceil(W/sr), or ceil(N/sr) in 1-D."""
        if self.sr == 1:
            return x
        B, N, C = x.shape
        if hw is None:
            g = F.avg_pool1d(x.transpose(1, 2), self.sr, ceil_mode=True)  # (B, C, ceil(N/sr))
        else:
            g = x.transpose(1, 2).reshape(B, C, *hw)  # (B, C, H, W)
            g = F.avg_pool2d(g, self.sr, ceil_mode=True).flatten(2)  # (B, C, ceil(H/sr) * ceil(W/sr))
        return self.norm(g.transpose(1, 2))  # (B, M, C)

    def forward(self, x, hw=None):
        B, N, C = x.shape
        h = self.heads
        kv_src = self.reduced(x, hw)
        M = kv_src.shape[1]
        q = self.q(x).view(B, N, h, self.qk_dim).transpose(1, 2)  # (B, h, N, dq)
        k = self.k(kv_src).view(B, M, h, self.qk_dim).transpose(1, 2)  # (B, h, M, dq)
        v = self.v(kv_src).view(B, M, h, self.head_dim).transpose(1, 2)  # (B, h, M, hd)
        y = kernels.attention(q, k, v)  # (B, h, N, hd)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))
