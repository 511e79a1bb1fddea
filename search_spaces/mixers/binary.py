"""BinaryAttention: 1-bit queries and keys (signs only), a learnable score bias, straight-through grads."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from search_spaces.registry import Mixer, Param, divides, register_mixer


class _SignSTE(torch.autograd.Function):
    """sign(x) in {-1, +1} (0 maps to +1); backward: straight-through, clipped to |x| <= 1."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def binarize(x: torch.Tensor) -> torch.Tensor:
    return _SignSTE.apply(x)


@register_mixer(
    "binary",
    causal=True,
    params={
        "heads": Param(4, int, low=1, doc="attention heads; must divide the width"),
        "max_rel": Param(8, int, low=0, high=512, doc="relative-position bias reach in tokens (0: no bias)"),
        "qkv_bias": Param(False, bool, doc="bias on the Q/K/V projection"),
    },
    rules=(divides("heads"),),
    family="attention",
)
class BinaryAttention(Mixer):
    """BinaryAttention (Xiao, Zhang & Zhang, CVPR 2026): one-bit QK attention.

    scores = tau_h * sign(Q) sign(K)^T / sqrt(d) + B_h[j - i], softmax over keys, times full-precision V.
    Only the signs of Q and K enter the forward pass (a binary kernel computes the dot product with
    XNOR + popcount); gradients pass straight through the sign (clipped to |x| <= 1). The learnable
    bias is the paper's additive attention bias: a per-head relative-position table indexed by the
    token offset j - i clipped to [-max_rel, max_rel] (causal: [-max_rel, 0]); on a 2-D grid the
    offset is taken in raster order. Deviation: the paper rescales the signs by mean |Q| and mean |K|
    (statistics over all tokens, which would leak the future in causal mode and make the forward
    depend on magnitudes); here that scale is a learnable per-head temperature tau_h.

    No ``kernels`` op takes a score bias, so this calls SDPA with a float mask directly.
    """

    def __init__(self, dim: int, *, causal: bool = False, heads: int = 4, max_rel: int = 8, qkv_bias: bool = False):
        super().__init__(dim, causal=causal)
        if dim % heads:
            raise ValueError(f"heads {heads} does not divide dim {dim}")
        self.heads, self.head_dim, self.max_rel = heads, dim // heads, max_rel
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.tau = nn.Parameter(torch.ones(heads))
        n_offsets = (max_rel + 1) if causal else (2 * max_rel + 1)
        self.rel_bias = nn.Parameter(torch.randn(heads, n_offsets) * 0.02) if max_rel > 0 else None

    def score_bias(self, n: int, device) -> torch.Tensor:
        """(h, N, N) additive score bias, -inf above the diagonal in causal mode."""
        off = torch.arange(n, device=device)[None, :] - torch.arange(n, device=device)[:, None]  # j - i
        if self.rel_bias is None:
            bias = torch.zeros(self.heads, n, n, device=device)
        else:
            idx = off.clamp(-self.max_rel, 0 if self.causal else self.max_rel) + self.max_rel
            bias = self.rel_bias[:, idx]  # (h, N, N)
        if self.causal:
            bias = bias.masked_fill(off > 0, float("-inf"))
        return bias

    def decode_state(self, n: int) -> int:
        """Values a decoder keeps per sequence after ``n`` tokens: V, and K as packed sign bits (32 per value)."""
        return n * self.dim + -(-n * self.dim // 32)

    def forward(self, x, hw=None):
        B, N, C = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, h, N, hd)
        q, k, v = qkv.unbind(0)
        qb = binarize(q) * self.tau.view(1, -1, 1, 1)  # (B, h, N, hd), values +-tau_h
        kb = binarize(k)
        bias = self.score_bias(N, x.device).to(q.dtype)
        y = F.scaled_dot_product_attention(qb, kb, v, attn_mask=bias, scale=1.0 / math.sqrt(self.head_dim))
        return self.proj(y.transpose(1, 2).reshape(B, N, C))
