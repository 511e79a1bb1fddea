"""Mixture-of-Head attention (MoH): shared heads plus top-k routed heads per token, weighted sum."""

from __future__ import annotations

import torch
import torch.nn as nn

from search_spaces.mixers.rules import moh_heads_rule
from search_spaces.mixers.softmax import SoftmaxAttention


class MixtureOfHeadAttention(SoftmaxAttention):
    """Mixture-of-Head attention (Jin et al. 2024, "MoH: Multi-Head Attention as Mixture-of-Head").

    Multi-head attention written as a sum over heads, sum_i H_i W_o^i, becomes a per-token weighted
    sum sum_i g_i H_i W_o^i. Heads 0..s-1 are shared; the other r = heads - s are routed, and each
    token keeps its top-k routed heads (g = 0 for the rest). Following the paper (eq. 5), with the
    head-count rescaling of its public code so that uniform weights give g_i = 1:

        g_shared_i = 2 a_1 * s * softmax(W_s x)_i       g_routed_i = 2 a_2 * r * softmax(W_r x)_i  (top-k)
        [a_1, a_2] = softmax(W_h x)

    (a factor is 1 and its router absent where a group is empty or has one head). Hence with
    topk = r and uniform router outputs, MoH equals multi-head attention with the same weights.
    Routing is per token, so causal mode is leak-free. In training, ``self.aux_loss`` holds the
    MoE load-balance loss r * sum_i f_i P_i of the routed heads (the caller may add it to the loss).
    All heads are computed and then masked (the dense path); a sparse kernel would skip them.
    """

    def __init__(self, dim: int, *, causal: bool = False, heads: int = 4, shared: int = 1, topk: int = 2,
                 qkv_bias: bool = False):
        err = moh_heads_rule(dim, {"heads": heads, "shared": shared, "topk": topk})
        if err:
            raise ValueError(err[1])
        super().__init__(dim, causal=causal, heads=heads, qkv_bias=qkv_bias)  # qkv and proj as in softmax
        self.shared, self.routed, self.topk = shared, heads - shared, topk
        # a softmax over one entry is constant (no gradient), so such routers are left out
        self.router_shared = nn.Linear(dim, shared, bias=False) if shared > 1 else None
        self.router_routed = nn.Linear(dim, self.routed, bias=False) if self.routed > 1 else None
        self.router_groups = nn.Linear(dim, 2, bias=False) if shared > 0 else None
        self.aux_loss = None

    def gates(self, x):
        """Per-token head weights (B, N, heads): shared heads first, then routed heads."""
        B, N, _ = x.shape
        if self.router_routed is not None:
            p = torch.softmax(self.router_routed(x).float(), dim=-1)  # (B, N, r)
            top = p.topk(self.topk, dim=-1).indices
            mask = torch.zeros_like(p).scatter_(-1, top, 1.0)
            if self.training:  # Switch-style balance: fraction routed x mean probability, per head
                self.aux_loss = self.routed * (mask.mean((0, 1)) / self.topk * p.mean((0, 1))).sum()
            g_routed = self.routed * p * mask
        else:
            g_routed = x.new_ones(B, N, 1, dtype=torch.float32)
        if self.shared == 0:
            return g_routed
        if self.router_shared is not None:
            g_shared = self.shared * torch.softmax(self.router_shared(x).float(), dim=-1)  # (B, N, s)
        else:
            g_shared = x.new_ones(B, N, 1, dtype=torch.float32)
        a = 2 * torch.softmax(self.router_groups(x).float(), dim=-1)  # (B, N, 2)
        return torch.cat([a[..., :1] * g_shared, a[..., 1:] * g_routed], dim=-1)  # (B, N, heads)

    def _out(self, y, x):  # forward, decode, decode_state: softmax's (routing is per query)
        B, _, N, _ = y.shape
        y = y.transpose(1, 2) * self.gates(x).to(y.dtype).unsqueeze(-1)  # (B, N, h, hd)
        return self.proj(y.reshape(B, N, self.dim))
