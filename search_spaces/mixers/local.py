"""Sliding-window / (dilated) neighborhood attention, 1-D over the sequence or 2-D over the grid."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels
from search_spaces.registry import Mixer, Param, divides, kv_buffers, register_mixer


def neighborhood_mask(hw: tuple[int, int], *, window: int, dilation: int = 1, device=None) -> torch.Tensor:
    """Boolean (H*W, H*W) mask of 2-D dilated neighborhoods over a row-major grid.

    Query (r, c) may attend to key (r', c') iff both axes satisfy the 1-D non-causal window rule
    of ``kernels.local_mask``: r' - r = dilation * t with |t| <= window // 2, likewise for columns
    (a window x window neighborhood on the dilated lattice through the query, clipped at the
    borders).
    """
    H, W = hw
    mh = kernels.local_mask(H, window=window, dilation=dilation, causal=False, device=device)  # (H, H)
    mw = kernels.local_mask(W, window=window, dilation=dilation, causal=False, device=device)  # (W, W)
    return (mh[:, None, :, None] & mw[None, :, None, :]).reshape(H * W, H * W)


@register_mixer(
    "local",
    causal=True,
    params={
        "heads": Param(4, int, low=1, doc="attention heads; must divide the width"),
        "window": Param(7, int, choices=(3, 5, 7, 9, 11, 13),
                        doc="keys per axis in the window (causal 1-D: keys at or before the query)"),
        "dilation": Param(1, int, choices=(1, 2, 3, 4), doc="gap between window positions (DiNAT)"),
        "qkv_bias": Param(True, bool, doc="bias on the Q/K/V projection"),
    },
    rules=(divides("heads"),),
    family="local",
)
class LocalAttention(Mixer):
    """Neighborhood attention with dilation (NAT / DiNAT, Hassani et al. 2022-23).

    1-D (``hw`` None): query i attends to keys i + dilation * t, |t| <= window // 2 (non-causal)
    or -(window - 1) <= t <= 0 (causal), via ``kernels.local_attention``. 2-D (``hw`` given,
    non-causal): the window x window neighborhood on the dilated lattice, see
    :func:`neighborhood_mask`; dilation spreads the same number of keys over a wider field at
    no extra cost. Windows are clipped at the borders (fewer keys there) rather than shifted
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
        B, N, _ = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, h, N, hd)
        return qkv.unbind(0)

    def forward(self, x, hw=None):
        B, N, C = x.shape
        q, k, v = self._qkv(x)
        if hw is None or self.causal:
            y = kernels.local_attention(q, k, v, window=self.window, dilation=self.dilation, causal=self.causal)
        else:
            if hw[0] * hw[1] != N:
                raise ValueError(f"hw {tuple(hw)} does not match {N} tokens")
            mask = neighborhood_mask(hw, window=self.window, dilation=self.dilation, device=x.device)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, h, N, hd)
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
