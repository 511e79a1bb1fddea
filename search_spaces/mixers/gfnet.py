"""GFNet global filter: FFT over tokens, a learnable complex filter, inverse FFT."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from search_spaces.mixer import Mixer


class GlobalFilter(Mixer):
    """Global filter layer (GFNet / SpectFormer spectral block); circular, hence non-causal.

    The filter is learned on ``filter_size`` frequency bins per axis and linearly resampled to
    the bins of the actual input (as GFNet does for a new resolution), so one module serves any
    sequence length. 1-D over tokens (``grid=False``: a (F, C) complex filter) or 2-D over the
    (H, W) grid with rfft2 (``grid=True``, set by the builder for images: an (F, F, C) filter).
    """

    grid_aware = True

    def __init__(self, dim: int, *, causal: bool = False, filter_size: int = 32, grid: bool = False):
        super().__init__(dim, causal=causal)
        self.filter_size = filter_size
        self.grid = grid
        shape = (filter_size, filter_size, dim, 2) if grid else (filter_size, dim, 2)
        w = torch.zeros(shape)
        w[..., 0] = 1.0  # real/imag pairs; initialised near the identity plus noise
        self.weight = nn.Parameter(w + 0.02 * torch.randn_like(w))

    def _filter(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Complex filter resampled to ``shape`` frequency bins: (*shape, C)."""
        w = self.weight
        if len(shape) == 1:
            w = w.permute(2, 1, 0)  # (2, C, F) - treat real/imag as batch, C as channels
            if shape[0] != self.filter_size:
                w = F.interpolate(w, size=shape[0], mode="linear", align_corners=True)
            w = w.permute(2, 1, 0)  # (n, C, 2)
        else:
            w = w.permute(3, 2, 0, 1)  # (2, C, F, F)
            if tuple(shape) != (self.filter_size, self.filter_size):
                w = F.interpolate(w, size=tuple(shape), mode="bilinear", align_corners=True)
            w = w.permute(2, 3, 1, 0)  # (h, wf, C, 2)
        return torch.view_as_complex(w.contiguous())

    def forward(self, x, hw=None):
        B, N, C = x.shape
        if (hw is not None) != self.grid:
            raise ValueError(f"gfnet built with grid={self.grid} got {'a grid' if hw else 'a sequence'}")
        dtype = x.dtype
        x = x.float()
        if hw is None:
            X = torch.fft.rfft(x, dim=1, norm="ortho")  # (B, N//2+1, C)
            X = X * self._filter((X.shape[1],))
            y = torch.fft.irfft(X, n=N, dim=1, norm="ortho")
        else:
            H, W = hw
            x = x.view(B, H, W, C)
            X = torch.fft.rfft2(x, dim=(1, 2), norm="ortho")  # (B, H, W//2+1, C)
            X = X * self._filter((X.shape[1], X.shape[2]))
            y = torch.fft.irfft2(X, s=(H, W), dim=(1, 2), norm="ortho").reshape(B, N, C)
        return y.to(dtype)
