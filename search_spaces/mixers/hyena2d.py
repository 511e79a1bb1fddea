"""Multi-dimensional Hyena for images: gated, implicit 2-D long convolutions computed by 2-D FFT."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from search_spaces.mixer import Mixer
from search_spaces.mixers.hyena import decay_rates, sine_mlp


class ImplicitFilter2D(nn.Module):
    """2-D filters h[dy, dx] = MLP(pos(dy, dx)) * exp(-decay * |(dy, dx)|), one per channel.

    Offsets cover -(H-1)..H-1 by -(W-1)..W-1 (a filter as large as the grid in every direction),
    normalized to [-1, 1] per axis. pos = [ty, tx, cos/sin(2 pi k ty), cos/sin(2 pi k tx), k = 1..bands];
    the MLP has sine activations, and per-channel exponential decays in the radial distance window
    the filters from local (fast decay) to global (slow), as Hyena's modulation does in 1-D.
    """

    def __init__(self, channels: int, *, width: int = 16, bands: int = 4):
        super().__init__()
        self.bands = bands
        self.mlp = sine_mlp(2 + 4 * bands, width, channels)
        self.register_buffer("decay", decay_rates(channels), persistent=False)
        self.bias = nn.Parameter(torch.randn(channels) * 0.02)  # skip term D * u

    @staticmethod
    def _axis(n: int, device) -> torch.Tensor:
        return torch.arange(-(n - 1), n, device=device, dtype=torch.float32) / max(n - 1, 1)  # (2n-1,)

    def forward(self, hw: tuple[int, int], device) -> torch.Tensor:
        H, W = hw
        ty, tx = torch.meshgrid(self._axis(H, device), self._axis(W, device), indexing="ij")  # (2H-1, 2W-1)
        k = torch.arange(1, self.bands + 1, device=device, dtype=torch.float32)
        ay, ax = 2 * math.pi * ty[..., None] * k, 2 * math.pi * tx[..., None] * k  # (2H-1, 2W-1, bands)
        z = torch.cat([ty[..., None], tx[..., None], ay.cos(), ay.sin(), ax.cos(), ax.sin()], dim=-1)
        h = self.mlp(z)  # (2H-1, 2W-1, channels)
        r = torch.sqrt(ty**2 + tx**2)[..., None]
        h = h * torch.exp(-r * self.decay)
        return h.permute(2, 0, 1)  # (channels, 2H-1, 2W-1)


def fft_conv2d(u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Linear (zero-padded, not circular) 2-D convolution by FFT.

    u (B, C, H, W), h (C, 2H-1, 2W-1) indexed by offset + (H-1, W-1):
    y[c, i, j] = sum_{a, b} h[c, i - a + H - 1, j - b + W - 1] u[c, a, b]. FFT size (2H, 2W) is
    enough that the wrap-around of the full convolution misses the rows/columns kept.
    """
    H, W = u.shape[-2:]
    s = (2 * H, 2 * W)
    dt = torch.promote_types(u.dtype, torch.float32)  # FFT in fp32 at least
    U = torch.fft.rfft2(u.to(dt), s=s)
    Hf = torch.fft.rfft2(h.to(dt), s=s)
    y = torch.fft.irfft2(U * Hf, s=s)  # full convolution, index = output position + (H-1, W-1)
    return y[..., H - 1 : 2 * H - 1, W - 1 : 2 * W - 1].to(u.dtype)


class Hyena2D(Mixer):
    """Hyena N-D for images (Zimerman & Wolf, "Multi-Dimensional Hyena for Spatial Inductive Bias").

    Hyena (Poli et al.) with its 1-D pieces made 2-D: projection to (order + 1) C channels, a short
    depthwise k x k conv, split into v and gates x_1..x_order, then ``order`` times
    v <- x_i * (h_i ** v + D_i v) where ** is a 2-D convolution with an implicit filter as large as
    the grid (``ImplicitFilter2D``), computed by zero-padded 2-D FFT; then an output projection.
    Every output position sees every input position (global receptive field); non-causal.
    Needs the token grid ``hw``.
    """

    def __init__(self, dim: int, *, causal: bool = False, order: int = 2, filter_dim: int = 16,
                 short_kernel: int = 3):
        super().__init__(dim, causal=causal)
        self.order, self.short_kernel = order, short_kernel
        width = (order + 1) * dim
        self.in_proj = nn.Linear(dim, width)
        self.short_conv = nn.Conv2d(width, width, short_kernel, groups=width, padding=short_kernel // 2)
        self.filter = ImplicitFilter2D(order * dim, width=filter_dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x, hw=None):
        if hw is None:
            raise ValueError("hyena2d needs the token grid hw=(H, W)")
        B, N, C = x.shape
        H, W = hw
        if H * W != N:
            raise ValueError(f"hw {tuple(hw)} does not match {N} tokens")
        u = self.in_proj(x).transpose(1, 2).reshape(B, -1, H, W)  # (B, (order+1)C, H, W)
        u = self.short_conv(u)
        *gates, v = u.split(C, dim=1)  # order gates of (B, C, H, W), and v
        h = self.filter((H, W), x.device).view(self.order, C, 2 * H - 1, 2 * W - 1)
        bias = self.filter.bias.view(self.order, C, 1, 1)
        for i in range(self.order):
            v = fft_conv2d(v, h[i]) + bias[i] * v
            v = v * gates[self.order - 1 - i]
        return self.out_proj(v.flatten(2).transpose(1, 2))  # (B, N, C)
