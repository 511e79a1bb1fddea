"""Sliding-window / (dilated) neighborhood attention, 1-D over the sequence or 2-D over the grid."""

from __future__ import annotations

import torch
from torch import nn

import kernels
from search_spaces.mixer import Mixer, kv_buffers, split_qkv


class LocalAttention(Mixer):
    """Neighborhood attention with dilation (NAT / DiNAT, Hassani et al. 2022-23).

    1-D (``hw`` None): query i attends to keys i + dilation * t, |t| <= window // 2 (non-causal)
    or -(window - 1) <= t <= 0 (causal), via ``kernels.local_attention``. 2-D (``hw`` given,
    non-causal): the window x window neighborhood on the dilated lattice, via
    ``kernels.neighborhood_attention``; dilation spreads the same number of keys over a wider
    field at no extra cost. Windows are clipped at the borders (fewer keys there) rather than shifted
    inward as in NATTEN. In causal mode a grid is read as its row-major sequence (the 1-D causal
    window), so causality holds whatever ``hw`` says.
    """

    def __init__(self, dim: int, *, causal: bool = False, heads: int = 4, window: int = 7,
                 dilation: int = 1, qkv_bias: bool = True):
        super().__init__(dim, causal=causal)
        if dim % heads:
            raise ValueError(f"heads {heads} does not divide dim {dim}")
        if window < 1 or dilation < 1:
            raise ValueError(f"window and dilation must be >= 1, got {window}, {dilation}")
        self.heads, self.head_dim = heads, dim // heads
        self.window, self.dilation = window, dilation
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def decode_state(self, n: int) -> int:
        """Values a decoder keeps per sequence after ``n`` tokens: K and V of the causal window only."""
        return 2 * min(n, (self.window - 1) * self.dilation + 1) * self.dim

    def _qkv(self, x):
        """Project and split into heads: q, k, v each (B, h, N, hd)."""
        return split_qkv(self.qkv(x), self.heads, self.head_dim)

    def forward(self, x, hw=None):
        B, N, C = x.shape
        q, k, v = self._qkv(x)
        if hw is None or self.causal:
            y = kernels.local_attention(q, k, v, window=self.window, dilation=self.dilation, causal=self.causal)
        else:
            y = kernels.neighborhood_attention(q, k, v, hw, window=self.window, dilation=self.dilation)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))

    # Decoding: K and V of the last R = (window - 1) * dilation + 1 positions in a ring buffer
    # (position p in slot p % R); a step writes its slot, then attends to the window's slots.
    def _ring(self, max_len: int) -> int:
        return min(max_len, (self.window - 1) * self.dilation + 1)

    def _init_cache(self, batch, max_len, device, dtype):
        return kv_buffers(batch, self.heads, self._ring(max_len), self.head_dim, device=device, dtype=dtype), {}

    def _prefill(self, x, cache):
        B, N, C = x.shape
        q, k, v = self._qkv(x)
        y = kernels.local_attention(q, k, v, window=self.window, dilation=self.dilation, causal=True)
        r = self._ring(cache.max_len)
        keep = torch.arange(max(0, N - r), N, device=x.device)  # the positions the ring holds
        cache.state["k"][:, :, keep % r] = k[:, :, keep]
        cache.state["v"][:, :, keep % r] = v[:, :, keep]
        return self.proj(y.transpose(1, 2).reshape(B, N, C)), cache.advanced(N)

    def _step(self, x, cache):
        B, _, C = x.shape
        q, k, v = self._qkv(x)  # (B, h, 1, hd)
        p, r = cache.pos, self._ring(cache.max_len)
        kr, vr = cache.state["k"], cache.state["v"]
        kr[:, :, p % r] = k[:, :, 0]
        vr[:, :, p % r] = v[:, :, 0]
        slots = [(p - t * self.dilation) % r for t in range(min(self.window, p // self.dilation + 1))]
        y = kernels.attention(q, kr[:, :, slots], vr[:, :, slots])  # (B, h, 1, hd) over the window's keys
        return self.proj(y.transpose(1, 2).reshape(B, 1, C)), cache.advanced()
