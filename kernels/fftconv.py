"""Long convolution of a sequence with a filter as long as the sequence, via FFT."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.dispatch import Op, checked_path, probe_tensor, record, register

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


def _check_taps(u, h, causal: bool):
    N = u.shape[-1]
    if causal and h.shape[-1] < N:
        raise ValueError(f"causal fft_conv needs at least N = {N} taps, got {h.shape[-1]}")
    if not causal and h.shape[-1] != 2 * N - 1:
        raise ValueError(f"non-causal fft_conv needs 2N-1 = {2 * N - 1} taps, got {h.shape[-1]}")


def _fft(u, h, *, causal: bool = True):
    """torch.fft in fp32: zero padding makes the circular convolution linear."""
    N = u.shape[-1]
    n_fft = 2 * N if causal else 3 * N
    h = h[:, :N] if causal else h
    y = torch.fft.irfft(torch.fft.rfft(u.float(), n=n_fft) * torch.fft.rfft(h.float(), n=n_fft), n=n_fft)
    return (y[..., :N] if causal else y[..., N - 1 : 2 * N - 1]).to(u.dtype)


def _conv1d(u, h, *, causal: bool = True):
    """Direct convolution as one grouped ``conv1d`` (cross-correlation with the flipped filter):
    O(N^2) work, no FFT. Out[n] = sum_j w[j] x[n + j] with x = u zero-padded by N - 1 on the left
    (and right, non-causal) and w = h flipped, which is h[n - m] (+ N - 1) u[m]."""
    N = u.shape[-1]
    taps = h[:, :N] if causal else h  # (C, N) or (C, 2N - 1)
    x = F.pad(u, (N - 1, 0) if causal else (N - 1, N - 1))  # (B, C, 2N - 1) or (B, C, 3N - 2)
    return F.conv1d(x, taps.flip(-1).unsqueeze(1).to(u.dtype), groups=u.shape[1])  # (B, C, N)


def _probes(path, device, dtype):
    """Causal with extra taps, and non-causal."""
    u = probe_tensor(2, 3, 12, seed=0, device=device, dtype=dtype)  # (B, C, N)
    return [((u, probe_tensor(3, 15, seed=1, device=device, dtype=dtype)), dict(causal=True)),
            ((u, probe_tensor(3, 23, seed=2, device=device, dtype=dtype)), dict(causal=False))]


OP = register(Op("fft_conv", paths={"torch.fft": _fft, "conv1d": _conv1d, "reference": fft_conv_reference},
                 probes=_probes))


def fft_conv(u, h, *, causal: bool = True):
    """FFT long convolution, (B, C, N) * (C, L) -> (B, C, N); see :func:`fft_conv_reference`.

    Causal: ``h`` holds taps 0..N-1 (extra taps are ignored); zero padding to 2N makes the
    circular FFT convolution linear, so no output sees a later input.
    Non-causal: ``h`` holds 2N-1 taps for offsets -(N-1)..N-1.
    torch.fft (in fp32) on every device. On CUDA the first call per dtype and device
    self-checks it against :func:`fft_conv_reference` and, on a mismatch, warns and falls back
    to a direct grouped ``conv1d`` (O(N^2)), then the reference.
    ``kernels.last_path("fft_conv")`` reports ``"torch.fft"``, ``"conv1d"`` or ``"reference"``.
    """
    _check(u, h)
    _check_taps(u, h, causal)
    path = checked_path(OP, ["torch.fft", "conv1d", "reference"], u)
    record("fft_conv", path)
    return OP.paths[path](u, h, causal=causal)
