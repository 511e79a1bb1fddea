"""Long convolution of a sequence with a filter as long as the sequence, via FFT."""

from __future__ import annotations

import torch

from kernels._dispatch import record

__all__ = ["fft_conv", "fft_conv_reference"]


def _check(u, h):
    if u.dim() != 3:
        raise ValueError(f"fft_conv expects u of shape (B, C, N), got {tuple(u.shape)}")
    if h.dim() != 2 or h.shape[0] != u.shape[1]:
        raise ValueError(f"fft_conv expects h of shape (C, L) with C={u.shape[1]}, got {tuple(h.shape)}")


def fft_conv_reference(u, h, *, causal: bool = True):
    """Direct convolution. Causal: y[n] = sum_{m<=n} h[n-m] u[m] with h of length >= N.
    Non-causal: h has length 2N-1 indexed by offset -(N-1)..(N-1): y[n] = sum_m h[n-m+N-1] u[m]."""
    _check(u, h)
    B, C, N = u.shape
    y = torch.zeros_like(u)
    for n in range(N):
        for m in range(N):
            off = n - m
            if causal:
                if off < 0:
                    continue
                y[:, :, n] += h[:, off] * u[:, :, m]
            else:
                y[:, :, n] += h[:, off + N - 1] * u[:, :, m]
    return y


def fft_conv(u, h, *, causal: bool = True):
    """FFT long convolution, (B, C, N) * (C, L) -> (B, C, N); see :func:`fft_conv_reference`.

    Causal: ``h`` holds taps 0..N-1 (extra taps are ignored); zero padding to 2N makes the
    circular FFT convolution linear, so no output sees a later input.
    Non-causal: ``h`` holds 2N-1 taps for offsets -(N-1)..N-1.
    """
    _check(u, h)
    N = u.shape[-1]
    dtype = u.dtype
    if causal:
        h = h[:, :N]
        n_fft = 2 * N
        y = torch.fft.irfft(torch.fft.rfft(u.float(), n=n_fft) * torch.fft.rfft(h.float(), n=n_fft), n=n_fft)
        out = y[..., :N]
    else:
        if h.shape[-1] != 2 * N - 1:
            raise ValueError(f"non-causal fft_conv needs 2N-1 = {2 * N - 1} taps, got {h.shape[-1]}")
        n_fft = 3 * N
        y = torch.fft.irfft(torch.fft.rfft(u.float(), n=n_fft) * torch.fft.rfft(h.float(), n=n_fft), n=n_fft)
        out = y[..., N - 1 : 2 * N - 1]
    record("fft_conv", "torch.fft")
    return out.to(dtype)
