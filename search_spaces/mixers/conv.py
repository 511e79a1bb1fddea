"""Depthwise convolution token mixer (1-D over the sequence, 2-D over the grid)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from search_spaces.mixer import Mixer


class DepthwiseConv(Mixer):
    """Depthwise convolution as the token mixer, for early high-resolution stages (SHViT's conv
    stages, FcaFormer, ConvNeXt-style depthwise mixing): each channel is filtered on its own.

    One depthwise kernel per channel (plus bias), zero "same" padding: k taps over the sequence
    (``grid=False``), or k x k over the (H, W) grid (``grid=True``, set by the builder for
    images). Causal mode is 1-D only: the k taps sit at or before the output position (left
    padding by k - 1).
    """

    grid_aware = True

    def __init__(self, dim: int, *, causal: bool = False, kernel_size: int = 3, grid: bool = False):
        super().__init__(dim, causal=causal)
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
        if causal and grid:
            raise ValueError("a causal conv mixer is 1-D (grid=False)")
        self.kernel_size = kernel_size
        self.grid = grid
        conv = nn.Conv2d if grid else nn.Conv1d
        self.conv = conv(dim, dim, kernel_size, groups=dim, padding=0)

    def decode_state(self, n: int) -> int:
        """Values a decoder keeps per sequence after ``n`` tokens: the last kernel_size - 1 inputs."""
        return (self.kernel_size - 1) * self.dim

    def forward(self, x, hw=None):
        B, N, C = x.shape
        k = self.kernel_size
        if (hw is not None) != self.grid:
            raise ValueError(f"conv built with grid={self.grid} got {'a grid' if hw else 'a sequence'}")
        if hw is None:
            pad = (k - 1, 0) if self.causal else ((k - 1) // 2, k // 2)
            y = self.conv(F.pad(x.transpose(1, 2), pad))  # (B, C, N)
            return y.transpose(1, 2)
        H, W = hw
        if H * W != N:
            raise ValueError(f"hw {tuple(hw)} does not match {N} tokens")
        g = x.transpose(1, 2).reshape(B, C, H, W)  # (B, C, H, W)
        p = ((k - 1) // 2, k // 2)
        y = self.conv(F.pad(g, (p[0], p[1], p[0], p[1])))  # (B, C, H, W)
        return y.flatten(2).transpose(1, 2)

    # Decoding: the last kernel_size - 1 inputs (zeros before the sequence, like the left padding).
    def _init_cache(self, batch, max_len, device, dtype):
        return {"tail": torch.zeros(batch, self.kernel_size - 1, self.dim, device=device, dtype=dtype)}, {}

    def _extend(self, x, cache):
        """The n tokens after the cache's pos: the conv over the tail and them, without padding."""
        xs = torch.cat([cache.state["tail"], x], dim=1)  # (B, k-1+n, C)
        y = self.conv(xs.transpose(1, 2)).transpose(1, 2)  # (B, n, C)
        return y, cache.advanced(x.shape[1], tail=xs[:, xs.shape[1] - (self.kernel_size - 1):])

    _prefill = _step = _extend
