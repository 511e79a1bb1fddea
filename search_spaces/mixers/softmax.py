"""Multi-head softmax attention (any head count, including a single head)."""

from __future__ import annotations

import torch.nn as nn

import kernels
from search_spaces.mixer import Mixer, kv_buffers, split_qkv


class KVAttention(Mixer):
    """Dot-product attention over a K/V cache, for mixers that differ only in their projections.

    A subclass sets ``kv_heads`` and ``head_dim`` and gives ``_qkv(x)`` -> q (B, h, N, d), k and v
    (B, kv_heads, N, d), and ``_out(y, x)`` -> (B, N, C) from the attention output y (B, h, N, d);
    ``forward``, the cache and decoding come from here."""

    def _out(self, y, x):
        """Attention output y (B, h, N, d) -> (B, N, C); ``x`` is the mixer's input (MoH routes on it)."""
        B, _, N, _ = y.shape
        return self.proj(y.transpose(1, 2).reshape(B, N, -1))

    def forward(self, x, hw=None):
        q, k, v = self._qkv(x)
        return self._out(kernels.attention(q, k, v, causal=self.causal), x)

    def _init_cache(self, batch, max_len, device, dtype):
        return kv_buffers(batch, self.kv_heads, max_len, self.head_dim, device=device, dtype=dtype), {}

    def _extend(self, x, cache):
        """The n tokens x (B, n, C) after the cache's pos: append their K/V, attend (bottom-right
        causal: the new queries see every cached key and the new keys up to themselves; one new
        query sees all keys, so no mask is needed)."""
        q, k, v = self._qkv(x)
        k, v = cache.append(k=k, v=v)  # (B, kv_heads, pos+n, d)
        n = x.shape[1]
        return self._out(kernels.attention(q, k, v, causal=n > 1), x), cache.advanced(n)

    _prefill = _step = _extend  # inference is dense attention (subsampled's eval() behaviour)


class SoftmaxAttention(KVAttention):
    """Multi-head scaled dot-product attention via ``kernels.attention`` (SDPA on CPU)."""

    def __init__(self, dim: int, *, causal: bool = False, heads: int = 4, qkv_bias: bool = False):
        super().__init__(dim, causal=causal)
        if dim % heads:
            raise ValueError(f"heads {heads} does not divide dim {dim}")
        self.heads = self.kv_heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def decode_state(self, n: int) -> int:
        """Values a decoder keeps per sequence after ``n`` tokens: the K and V cache."""
        return 2 * n * self.dim

    def _qkv(self, x):
        """Project and split into heads: q, k, v each (B, h, N, hd)."""
        return split_qkv(self.qkv(x), self.heads, self.head_dim)
