"""Differential attention (DIFF Transformer), with Grouped Differential Attention's unbalanced heads."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

import kernels
from search_spaces.mixer import Mixer
from search_spaces.mixers.rules import diff_heads_rule


class DifferentialAttention(Mixer):
    """Differential attention (Ye et al. 2024) with grouped noise heads (Grouped Differential Attention, 2025).

    Head i has a signal map A1_i = softmax(Q1_i K1_i^T / sqrt(d)) and subtracts a noise map:
    out_i = (A1_i - lambda * A2_{g(i)}) V_i, with Q/K width d = dim / (2 heads) and V width 2d.
    GDA's unbalanced allocation: only ``noise_heads`` noise maps exist, each shared by
    heads / noise_heads consecutive signal heads (``g(i) = i // (heads / noise_heads)``, GQA-style
    repetition); the noise map is computed once and applied to its group's concatenated values.
    lambda = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init is learnable (one per layer, as in DIFF).
    Then per-head RMSNorm scaled by (1 - lambda_init), and the output projection. lambda = 0 (and
    no head norm) is plain softmax attention with the signal maps.
    """

    def __init__(self, dim: int, *, causal: bool = False, heads: int = 4, noise_heads: int = 2,
                 lambda_init: float = 0.8, head_norm: bool = True):
        super().__init__(dim, causal=causal)
        err = diff_heads_rule(dim, {"heads": heads, "noise_heads": noise_heads})
        if err:
            raise ValueError(err[1])
        self.heads, self.noise_heads = heads, noise_heads
        self.d = dim // (2 * heads)
        self.lambda_init = lambda_init
        self.q = nn.Linear(dim, (heads + noise_heads) * self.d, bias=False)
        self.k = nn.Linear(dim, (heads + noise_heads) * self.d, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.lambda_q1 = nn.Parameter(torch.randn(self.d) * 0.1)
        self.lambda_k1 = nn.Parameter(torch.randn(self.d) * 0.1)
        self.lambda_q2 = nn.Parameter(torch.randn(self.d) * 0.1)
        self.lambda_k2 = nn.Parameter(torch.randn(self.d) * 0.1)
        self.norm_weight = nn.Parameter(torch.ones(2 * self.d)) if head_norm else None

    def lam(self) -> torch.Tensor:
        return (torch.exp((self.lambda_q1 * self.lambda_k1).sum()) - torch.exp((self.lambda_q2 * self.lambda_k2).sum())
                + self.lambda_init)

    def decode_state(self, n: int) -> int:
        """Values a decoder keeps per sequence after ``n`` tokens: K of signal and noise heads, and V."""
        return n * (self.heads + self.noise_heads) * self.d + n * self.dim

    def _qkv(self, x):
        B, N, _ = x.shape
        h, g, d = self.heads, self.noise_heads, self.d
        q = self.q(x).view(B, N, h + g, d).transpose(1, 2)  # (B, h+g, N, d)
        k = self.k(x).view(B, N, h + g, d).transpose(1, 2)
        v = self.v(x).view(B, N, h, 2 * d).transpose(1, 2)  # (B, h, N, 2d)
        return q, k, v

    def _attend(self, q, k, v, causal: bool):
        """q (B, h+g, N, d), k (B, h+g, M, d), v (B, h, M, 2d) -> (B, N, C); causal is bottom-right
        aligned when N < M (the last N of M positions query, as when decoding)."""
        B, N, M = q.shape[0], q.shape[2], k.shape[2]
        h, g, d = self.heads, self.noise_heads, self.d
        signal = kernels.attention(q[:, :h], k[:, :h], v, causal=causal)  # (B, h, N, 2d)
        rep = h // g
        # values of each noise group side by side: (B, g, rep, M, 2d) -> (B, g, M, rep * 2d)
        v_grp = v.reshape(B, g, rep, M, 2 * d).permute(0, 1, 3, 2, 4).reshape(B, g, M, rep * 2 * d)
        noise = kernels.attention(q[:, h:], k[:, h:], v_grp, causal=causal, scale=1.0 / math.sqrt(d))
        noise = noise.view(B, g, N, rep, 2 * d).permute(0, 1, 3, 2, 4).reshape(B, h, N, 2 * d)
        y = signal - self.lam() * noise  # (B, h, N, 2d)
        if self.norm_weight is not None:
            y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-5) * self.norm_weight
            y = y * (1 - self.lambda_init)
        return self.proj(y.transpose(1, 2).reshape(B, N, self.dim))

    def forward(self, x, hw=None):
        return self._attend(*self._qkv(x), causal=self.causal)

    def _init_cache(self, batch, max_len, device, dtype):
        h, g, d = self.heads, self.noise_heads, self.d
        return {"k": torch.zeros(batch, h + g, max_len, d, device=device, dtype=dtype),  # signal and noise keys
                "v": torch.zeros(batch, h, max_len, 2 * d, device=device, dtype=dtype)}, {}

    def _extend(self, x, cache):
        """The n tokens after the cache's pos: append their keys and values, attend to all so far."""
        q, k, v = self._qkv(x)
        k, v = cache.append(k=k, v=v)  # (B, h+g, pos+n, d), (B, h, pos+n, 2d)
        return self._attend(q, k, v, causal=x.shape[1] > 1), cache.advanced(x.shape[1])

    _prefill = _step = _extend
