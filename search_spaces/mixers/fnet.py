"""FNet Fourier mixing: the real part of a discrete Fourier transform over tokens and channels."""

from __future__ import annotations

import torch

from search_spaces.mixer import Mixer


class FourierMixing(Mixer):
    """FNet (Lee-Thorp et al. 2022; SpectFormer's spectral layer): y = Re(FFT_tokens(FFT_channels(x))).

    Parameter-free. Without ``hw`` this is Re(fft2) over the (N, C) axes; with ``hw`` the tokens
    form a grid and the token transform is 2-D, i.e. Re(fftn) over (H, W, C). ``norm='ortho'``
    divides by sqrt(N C) so the residual stream keeps its scale (FNet itself uses no scaling and
    a post-LayerNorm). Every output mixes every input: non-causal only.
    """

    def __init__(self, dim: int, *, causal: bool = False, norm: str = "ortho"):
        super().__init__(dim, causal=causal)
        if norm not in ("ortho", "backward"):
            raise ValueError(f"norm must be 'ortho' or 'backward', got {norm!r}")
        self.norm = norm

    def forward(self, x, hw=None):
        B, N, C = x.shape
        dtype = x.dtype
        x = x if x.dtype in (torch.float32, torch.float64) else x.float()  # FFT needs fp32+
        if hw is None:
            y = torch.fft.fft2(x, dim=(1, 2), norm=self.norm).real  # (B, N, C)
        else:
            H, W = hw
            if H * W != N:
                raise ValueError(f"hw {tuple(hw)} does not match {N} tokens")
            y = torch.fft.fftn(x.view(B, H, W, C), dim=(1, 2, 3), norm=self.norm).real.reshape(B, N, C)
        return y.to(dtype)
