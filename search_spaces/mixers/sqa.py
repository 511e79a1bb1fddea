"""Sparse Query Attention (SQA): fewer query heads than the head budget, so fewer score maps."""

from __future__ import annotations

import torch.nn as nn

from search_spaces.mixers.rules import sqa_heads_rule
from search_spaces.mixers.softmax import KVAttention


class SparseQueryAttention(KVAttention):
    """Sparse Query Attention (Filipek 2025): reduce query heads instead of K/V heads.

    Head width ``d = dim / heads`` is set by the budget H = ``heads``, but only ``q_heads`` query
    heads are computed (Q projection to H_q * d), with ``kv_heads`` K/V heads shared GQA-style by
    groups of query heads. The score and value products cost 2 * B * H_q * N^2 * d each: H_q / H of
    multi-head attention. The output projection maps H_q * d back to ``dim``. With H_q = H_kv = H/2
    this is the paper's symmetric sSQA; H_q = H_kv = H/4 its extreme xSQA.
    """

    def __init__(self, dim: int, *, causal: bool = False, heads: int = 4, q_heads: int = 2, kv_heads: int = 2,
                 qkv_bias: bool = False):
        super().__init__(dim, causal=causal)
        err = sqa_heads_rule(dim, {"heads": heads, "q_heads": q_heads, "kv_heads": kv_heads})
        if dim % heads or err:
            raise ValueError(err[1] if err else f"heads {heads} does not divide dim {dim}")
        self.heads, self.q_heads, self.kv_heads = heads, q_heads, kv_heads
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, q_heads * self.head_dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * kv_heads * self.head_dim, bias=qkv_bias)
        self.proj = nn.Linear(q_heads * self.head_dim, dim)

    def decode_state(self, n: int) -> int:
        """Values a decoder keeps per sequence after ``n`` tokens: K and V of the kv_heads."""
        return 2 * n * self.kv_heads * self.head_dim

    def _qkv(self, x):
        B, N, _ = x.shape
        q = self.q(x).view(B, N, self.q_heads, self.head_dim).transpose(1, 2)  # (B, Hq, N, d)
        kv = self.kv(x).view(B, N, 2, self.kv_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (2, B, Hkv, N, d)
        return (q, *kv.unbind(0))
