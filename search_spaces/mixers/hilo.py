"""HiLo attention (LITv2): local-window heads for high frequencies, pooled-global heads for low."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from search_spaces.mixer import Mixer


class HiLo(Mixer):
    """HiLo attention (Pan et al., "Fast Vision Transformers with HiLo Attention", LITv2, 2022).

    The heads are split: ``int(heads * alpha)`` Lo-Fi heads, the rest Hi-Fi. Hi-Fi heads attend
    only within non-overlapping window x window patches of the grid (high-frequency, local
    detail). Lo-Fi heads let every query attend to keys/values computed from the window-average
    pooled input (one token per window: low-frequency, global structure). Each group has its own
    projections; their outputs are concatenated (Hi-Fi first). alpha = 0 gives pure window
    attention, alpha = 1 pure pooled-global attention.

    On a grid (``hw``) windows are window x window patches; without ``hw`` the sequence is a
    1 x N grid and windows are runs of ``window`` tokens. Sides that the window does not divide
    get a partial last window (Hi-Fi: padded keys are masked; Lo-Fi: the average is over the
    tokens present). Non-causal: a token sees its whole window and the pooled summary of all.
    """

    def __init__(self, dim: int, *, causal: bool = False, heads: int = 4, alpha: float = 0.5,
                 window: int = 2, qkv_bias: bool = True):
        super().__init__(dim, causal=causal)
        if dim % heads:
            raise ValueError(f"heads {heads} does not divide dim {dim}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.head_dim = dim // heads
        self.window = window
        self.l_heads = int(heads * alpha)
        self.h_heads = heads - self.l_heads
        self.l_dim, self.h_dim = self.l_heads * self.head_dim, self.h_heads * self.head_dim
        if self.h_heads:
            self.h_qkv = nn.Linear(dim, 3 * self.h_dim, bias=qkv_bias)
            self.h_proj = nn.Linear(self.h_dim, self.h_dim)
        if self.l_heads:
            self.l_q = nn.Linear(dim, self.l_dim, bias=qkv_bias)
            self.l_kv = nn.Linear(dim, 2 * self.l_dim, bias=qkv_bias)
            self.l_proj = nn.Linear(self.l_dim, self.l_dim)

    def _windows(self, hw):
        return (self.window, self.window) if hw[0] > 1 else (1, self.window)

    def hifi(self, x, hw):
        """Attention inside non-overlapping windows: (B, N, C) -> (B, N, h_dim)."""
        B, N, C = x.shape
        H, W = hw
        wh, ww = self._windows(hw)
        ph, pw = -H % wh, -W % ww
        g = F.pad(x.view(B, H, W, C), (0, 0, 0, pw, 0, ph))  # (B, Hp, Wp, C)
        gh, gw = (H + ph) // wh, (W + pw) // ww
        g = g.view(B, gh, wh, gw, ww, C).transpose(2, 3).reshape(B, gh * gw, wh * ww, C)  # (B, G, T, C)
        qkv = self.h_qkv(g).view(B, gh * gw, wh * ww, 3, self.h_heads, self.head_dim)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each (B, G, hh, T, hd)
        mask = None
        if ph or pw:
            valid = F.pad(torch.ones(H, W, dtype=torch.bool, device=x.device), (0, pw, 0, ph))  # (Hp, Wp)
            valid = valid.view(gh, wh, gw, ww).transpose(1, 2).reshape(gh * gw, 1, 1, wh * ww)  # (G, 1, 1, T)
            mask = valid
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, G, hh, T, hd)
        y = y.transpose(2, 3).reshape(B, gh, gw, wh, ww, self.h_dim).transpose(2, 3)  # (B, gh, wh, gw, ww, h_dim)
        y = y.reshape(B, gh * wh, gw * ww, self.h_dim)[:, :H, :W].reshape(B, N, self.h_dim)
        return self.h_proj(y)

    def lofi(self, x, hw):
        """Every query attends to window-averaged keys/values: (B, N, C) -> (B, N, l_dim)."""
        B, N, C = x.shape
        H, W = hw
        q = self.l_q(x).view(B, N, self.l_heads, self.head_dim).transpose(1, 2)  # (B, lh, N, hd)
        g = x.transpose(1, 2).reshape(B, C, H, W)
        wins = self._windows(hw)
        pooled = F.avg_pool2d(g, wins, wins, ceil_mode=True).flatten(2).transpose(1, 2)  # (B, M, C)
        M = pooled.shape[1]
        kv = self.l_kv(pooled).view(B, M, 2, self.l_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (2, B, lh, M, hd)
        y = F.scaled_dot_product_attention(q, kv[0], kv[1])  # (B, lh, N, hd)
        return self.l_proj(y.transpose(1, 2).reshape(B, N, self.l_dim))

    def forward(self, x, hw=None):
        B, N, C = x.shape
        hw = (1, N) if hw is None else tuple(hw)
        if hw[0] * hw[1] != N:
            raise ValueError(f"hw {hw} does not match {N} tokens")
        outs = []
        if self.h_heads:
            outs.append(self.hifi(x, hw))
        if self.l_heads:
            outs.append(self.lofi(x, hw))
        return torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]
