"""BinaryAttention: 1-bit queries and keys (signs only), a learnable score bias, straight-through grads."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from search_spaces.mixer import Mixer, split_qkv


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
    """sign(x) in {-1, +1}; through the straight-through estimator only where a gradient is
    recorded (without one, the plain op: the same values, and a graph exporters can save)."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
    return _SignSTE.apply(x)


_BITS = 2 ** torch.arange(8, dtype=torch.uint8)  # bit j of a byte has weight 2^j


def pack_signs(x: torch.Tensor) -> torch.Tensor:
    """Sign bits of x (..., D) (1 where binarize gives +1), 8 to a byte: (..., ceil(D / 8)) uint8."""
    bits = (x >= 0).to(torch.uint8)
    bits = F.pad(bits, (0, -x.shape[-1] % 8)).unflatten(-1, (-1, 8))  # (..., D8, 8)
    return (bits * _BITS.to(x.device)).sum(-1, dtype=torch.uint8)


def unpack_signs(packed: torch.Tensor, d: int, dtype=torch.float32) -> torch.Tensor:
    """Inverse of :func:`pack_signs`: (..., ceil(d / 8)) uint8 -> (..., d) of +-1."""
    bits = (packed.unsqueeze(-1) >> torch.arange(8, dtype=torch.uint8, device=packed.device)) & 1  # (..., D8, 8)
    return bits.flatten(-2)[..., :d].to(dtype) * 2 - 1


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

    def score_bias(self, n: int, device, n_queries: int | None = None) -> torch.Tensor:
        """(h, Nq, N) additive score bias of the last ``n_queries`` (default all) of ``n`` positions
        over all n keys, -inf after the query in causal mode."""
        nq = n if n_queries is None else n_queries
        off = torch.arange(n, device=device)[None, :] - torch.arange(n - nq, n, device=device)[:, None]  # j - i
        if self.rel_bias is None:
            bias = torch.zeros(self.heads, nq, n, device=device)
        else:
            idx = off.clamp(-self.max_rel, 0 if self.causal else self.max_rel) + self.max_rel
            bias = self.rel_bias[:, idx]  # (h, Nq, N)
        if self.causal:
            bias = bias.masked_fill(off > 0, float("-inf"))
        return bias

    def decode_state(self, n: int) -> int:
        """Values a decoder keeps per sequence after ``n`` tokens: V, and K as packed sign bits (32 per value)."""
        return n * self.dim + -(-n * self.dim // 32)

    def _qkv(self, x):
        """Project and split into heads: q, k, v each (B, h, N, hd)."""
        return split_qkv(self.qkv(x), self.heads, self.head_dim)

    def _attend(self, q, kb, v):
        """q (B, h, N, hd), key signs kb (B, h, M, hd), v (B, h, M, hd) -> (B, N, C); the queries
        are the last N of the M positions."""
        B, _, N, _ = q.shape
        qb = binarize(q) * self.tau.view(1, -1, 1, 1)  # (B, h, N, hd), values +-tau_h
        bias = self.score_bias(kb.shape[2], q.device, n_queries=N).to(q.dtype)
        y = F.scaled_dot_product_attention(qb, kb, v, attn_mask=bias, scale=1.0 / math.sqrt(self.head_dim))
        return self.proj(y.transpose(1, 2).reshape(B, N, self.dim))

    def forward(self, x, hw=None):
        q, k, v = self._qkv(x)
        return self._attend(q, binarize(k), v)

    def _init_cache(self, batch, max_len, device, dtype):
        h, hd = self.heads, self.head_dim
        return {"k": torch.zeros(batch, h, max_len, -(-hd // 8), device=device, dtype=torch.uint8),  # sign bits
                "v": torch.zeros(batch, h, max_len, hd, device=device, dtype=dtype)}, {}

    def _extend(self, x, cache):
        """The n tokens after the cache's pos: append V and K's packed sign bits, attend to all so far."""
        q, k, v = self._qkv(x)
        k_bits, v = cache.append(k=pack_signs(k), v=v)  # (B, h, pos+n, hd/8) uint8, (B, h, pos+n, hd)
        return self._attend(q, unpack_signs(k_bits, self.head_dim, v.dtype), v), cache.advanced(x.shape[1])

    _prefill = _step = _extend
