"""SHViT single-head attention over a fraction of the channels (partial-channel single head)."""

from __future__ import annotations

import torch
import torch.nn as nn

import kernels
from search_spaces.mixer import Mixer
from search_spaces.mixers.rules import partial_dims


class SingleHeadAttention(Mixer):
    """SHViT single-head self-attention (Yun & Ro, CVPR 2024): one head over a fraction r of the channels.

    The first ``p = r * dim`` channels are normalized (per token) and mixed by one attention head
    (query/key width ``qk_dim``, value width ``p``) followed by a ReLU + linear projection back to
    ``p`` channels; the other ``dim - p`` channels pass through unchanged (bit for bit). Attention
    cost and the Q/K/V projection scale with r. Deviation from SHViT: SHViT normalizes with a
    GroupNorm over the whole feature map and projects all channels after the concatenation; here the
    norm is per token (so causal mode leaks nothing) and the projection covers only the attended
    channels, so the untouched channels stay exactly the input (the block's residual adds them).
    """

    def __init__(self, dim: int, *, causal: bool = False, ratio: float = 0.25, qk_dim: int = 16):
        super().__init__(dim, causal=causal)
        if partial_dims(dim, {"ratio": ratio}):
            raise ValueError(f"ratio {ratio} of dim {dim} is not a whole number of channels")
        self.pdim = int(dim * ratio)
        self.qk_dim = qk_dim
        self.pre_norm = nn.LayerNorm(self.pdim)
        self.qkv = nn.Linear(self.pdim, 2 * qk_dim + self.pdim)
        self.proj = nn.Sequential(nn.ReLU(), nn.Linear(self.pdim, self.pdim))

    def decode_state(self, n: int) -> int:
        """Values a decoder keeps per sequence after ``n`` tokens: K (qk_dim) and V (the attended channels)."""
        return n * (self.qk_dim + self.pdim)

    def _mix(self, x, cache=None):
        """Forward over x (B, N, C); with a cache, x is the N tokens after the cache's pos and their
        K/V are appended first."""
        _, N, C = x.shape
        x1, x2 = x.split([self.pdim, C - self.pdim], dim=-1)  # (B, N, p), (B, N, C-p)
        q, k, v = self.qkv(self.pre_norm(x1)).split([self.qk_dim, self.qk_dim, self.pdim], dim=-1)
        q, k, v = q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)  # one head: (B, 1, N, qk_dim), (B, 1, N, p)
        if cache is not None:
            k, v = cache.append(k=k, v=v)  # (B, 1, pos+N, .)
        y = kernels.attention(q, k, v, causal=self.causal and bool(N > 1))  # (B, 1, N, p); bottom-right causal
        y = self.proj(y.squeeze(1))  # (B, N, p)
        return torch.cat([y, x2], dim=-1)  # (B, N, C)

    def forward(self, x, hw=None):
        return self._mix(x)

    def _init_cache(self, batch, max_len, device, dtype):
        return {"k": torch.zeros(batch, 1, max_len, self.qk_dim, device=device, dtype=dtype),
                "v": torch.zeros(batch, 1, max_len, self.pdim, device=device, dtype=dtype)}, {}

    def _extend(self, x, cache):
        return self._mix(x, cache), cache.advanced(x.shape[1])

    _prefill = _step = _extend
