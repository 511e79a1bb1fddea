"""Hyena operator: gated, implicitly parameterized long convolutions computed by FFT."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels
from search_spaces.mixer import Mixer


class ImplicitFilter(nn.Module):
    """Long filters h[t] = MLP(pos(t)) * exp(-decay * |t|), one per channel and gating step.

    pos(t) = [t, cos(2 pi k t), sin(2 pi k t) for k = 1..bands] with t normalized to [0, 1]
    (causal: offsets 0..N-1) or [-1, 1] (non-causal: offsets -(N-1)..N-1). The MLP uses sine
    activations and its output is windowed by per-channel exponential decays (Hyena's modulation).
    """

    def __init__(self, channels: int, *, width: int = 16, bands: int = 4, causal: bool = True):
        super().__init__()
        self.channels = channels
        self.bands = bands
        self.causal = causal
        self.mlp = sine_mlp(1 + 2 * bands, width, channels)
        self.register_buffer("decay", decay_rates(channels), persistent=False)
        self.bias = nn.Parameter(torch.randn(channels) * 0.02)  # skip term D * u

    def forward(self, n: int, device) -> torch.Tensor:
        if self.causal:
            t = torch.linspace(0, 1, n, device=device)  # offsets 0..n-1
        else:
            t = torch.linspace(-1, 1, 2 * n - 1, device=device)  # offsets -(n-1)..n-1
        k = torch.arange(1, self.bands + 1, device=device, dtype=t.dtype)
        ang = 2 * math.pi * t[:, None] * k[None, :]
        z = torch.cat([t[:, None], torch.cos(ang), torch.sin(ang)], dim=-1)  # (L, emb)
        h = self.mlp(z)  # (L, channels)
        h = h * torch.exp(-t.abs()[:, None] * self.decay[None, :])
        return h.transpose(0, 1)  # (channels, L)


def sine_mlp(emb: int, width: int, channels: int) -> nn.Sequential:
    """The implicit filter's MLP: positional features -> filter taps, sine activations."""
    return nn.Sequential(nn.Linear(emb, width), _Sin(width), nn.Linear(width, width), _Sin(width),
                         nn.Linear(width, channels))


def decay_rates(channels: int) -> torch.Tensor:
    """Per-channel exponential decay rates (Hyena's window), from fast (local) to slow (global)."""
    fast, slow = math.log(1e-2) / 1.5, math.log(1e-2) / 0.3
    return torch.linspace(-fast, -slow, channels).abs()


class _Sin(nn.Module):
    def __init__(self, width: int, w0: float = 1.0):
        super().__init__()
        self.freq = nn.Parameter(w0 * torch.ones(1, width))

    def forward(self, x):
        return torch.sin(self.freq * x)


class Hyena(Mixer):
    """Hyena operator (Poli et al.): y = x0 * (h_1 * (x1 * (h_2 * v))) ... for ``order`` steps.

    Projections -> short depthwise conv -> split into v, x_1..x_order -> alternating long FFT
    convolution with an implicit filter and elementwise gating -> output projection. Causal mode
    pads the short conv on the left and uses one-sided filters with zero padding in the FFT.
    """

    def __init__(self, dim: int, *, causal: bool = False, order: int = 2, filter_dim: int = 16,
                 short_kernel: int = 3):
        super().__init__(dim, causal=causal)
        self.order = order
        self.short_kernel = short_kernel
        width = (order + 1) * dim
        self.in_proj = nn.Linear(dim, width)
        self.short_conv = nn.Conv1d(width, width, short_kernel, groups=width, padding=0)
        self.filter = ImplicitFilter(order * dim, width=filter_dim, causal=causal)
        self.out_proj = nn.Linear(dim, dim)

    def decode_state(self, n: int) -> int:
        """Values a decoder keeps per sequence after ``n`` tokens: every long convolution input over the whole history, plus the short-conv tail."""
        return self.order * n * self.dim + (self.short_kernel - 1) * (self.order + 1) * self.dim

    def _short(self, x):
        """in_proj then the (padded) short conv: x (B, N, C) -> u (B, (order+1)C, N), and the
        padded projections (B, (order+1)C, k-1+N)."""
        k = self.short_kernel
        pad = (k - 1, 0) if self.causal else ((k - 1) // 2, k // 2)
        u = F.pad(self.in_proj(x).transpose(1, 2), pad)
        return self.short_conv(u), u

    def _long(self, u, h, history=None):
        """The gated long convolutions: u (B, (order+1)C, N), filters h (order, C, >= N) -> (B, N, C).
        ``history`` (B, order, C, >= N), if given, receives each convolution's input."""
        C, N = self.dim, u.shape[-1]
        *gates, v = u.split(C, dim=1)  # order gates of (B, C, N), and v
        bias = self.filter.bias.view(self.order, C, 1)
        for i in range(self.order):
            if history is not None:
                history[:, i, :, :N] = v
            v = kernels.fft_conv(v, h[i], causal=self.causal) + bias[i] * v
            v = v * gates[self.order - 1 - i]
        return self.out_proj(v.transpose(1, 2))

    def forward(self, x, hw=None):
        u, _ = self._short(x)
        h = self.filter(x.shape[1], x.device).view(self.order, self.dim, -1)  # (order, C, L)
        return self._long(u, h)

    # Decoding: the short conv's last k-1 projections ("tail") and each long convolution's
    # inputs so far ("history"); a step costs O(t) per channel, a long filter having no
    # recurrent form. The filters are those of a max_len-token forward (taps 0..max_len-1).
    def _init_cache(self, batch, max_len, device, dtype):
        C, k = self.dim, self.short_kernel
        h = self.filter(max_len, device).view(self.order, C, max_len).to(dtype)  # (order, C, L)
        state = {"tail": torch.zeros(batch, (self.order + 1) * C, k - 1, device=device, dtype=dtype),
                 "history": torch.zeros(batch, self.order, C, max_len, device=device, dtype=dtype)}
        return state, {"h": h, "h_rev": h.flip(-1)}

    def _prefill(self, x, cache):
        u, padded = self._short(x)
        y = self._long(u, cache.const["h"], history=cache.state["history"])
        return y, cache.advanced(x.shape[1], tail=padded[..., padded.shape[-1] - (self.short_kernel - 1):])

    def _step(self, x, cache):
        C, p, L = self.dim, cache.pos, cache.max_len
        win = torch.cat([cache.state["tail"], self.in_proj(x[:, 0]).unsqueeze(-1)], dim=-1)  # (B, (order+1)C, k)
        u = (win * self.short_conv.weight[:, 0]).sum(-1) + self.short_conv.bias  # (B, (order+1)C)
        *gates, v = u.split(C, dim=1)  # (B, C) each
        hist, h_rev = cache.state["history"], cache.const["h_rev"]
        bias = self.filter.bias.view(self.order, C)
        for i in range(self.order):
            hist[:, i, :, p] = v
            # y_p = sum_{m <= p} h[p - m] v_m: taps p..0 are the last p+1 of the reversed filter
            v = (hist[:, i, :, : p + 1] * h_rev[i, :, L - 1 - p :]).sum(-1) + bias[i] * v
            v = v * gates[self.order - 1 - i]
        return self.out_proj(v).unsqueeze(1), cache.advanced(tail=win[..., 1:])
