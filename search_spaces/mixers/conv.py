"""Depthwise convolution token mixer (1-D over the sequence, 2-D over the grid)."""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from search_spaces.registry import Mixer, Param, register_mixer


@register_mixer(
    "conv",
    causal=True,
    params={
        "kernel_size": Param(3, int, choices=(3, 5, 7, 9), doc="taps per axis"),
    },
    family="conv",
)
class DepthwiseConv(Mixer):
    """Depthwise convolution as the token mixer, for early high-resolution stages (SHViT's conv
    stages, FcaFormer, ConvNeXt-style depthwise mixing): each channel is filtered on its own.

    One depthwise k x k kernel per channel (plus bias), zero "same" padding. With ``hw`` it runs
    over the 2-D grid. Without ``hw`` the sequence is a 1 x N grid, so only the kernel's middle
    row touches data: a 1-D depthwise conv of k taps (the other rows stay unused in 1-D models).
    Causal mode is 1-D only: the k taps sit at or before the output position (left padding by
    k - 1); a grid is then read as its row-major sequence, which keeps causality.
    """

    def __init__(self, dim: int, *, causal: bool = False, kernel_size: int = 3):
        super().__init__(dim, causal=causal)
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
        self.kernel_size = kernel_size
        self.conv = nn.Conv2d(dim, dim, kernel_size, groups=dim, padding=0)

    def forward(self, x, hw=None):
        B, N, C = x.shape
        k = self.kernel_size
        if hw is None or self.causal:
            w = self.conv.weight[:, :, k // 2, :]  # (C, 1, k): the row through the centre
            pad = (k - 1, 0) if self.causal else ((k - 1) // 2, k // 2)
            y = F.conv1d(F.pad(x.transpose(1, 2), pad), w, self.conv.bias, groups=C)  # (B, C, N)
            return y.transpose(1, 2)
        H, W = hw
        if H * W != N:
            raise ValueError(f"hw {tuple(hw)} does not match {N} tokens")
        g = x.transpose(1, 2).reshape(B, C, H, W)  # (B, C, H, W)
        p = ((k - 1) // 2, k // 2)
        y = self.conv(F.pad(g, (p[0], p[1], p[0], p[1])))  # (B, C, H, W)
        return y.flatten(2).transpose(1, 2)
