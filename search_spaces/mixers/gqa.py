"""Grouped-query attention (GQA; MQA when kv_heads == 1): query heads share fewer K/V heads."""

from __future__ import annotations

import torch.nn as nn

from search_spaces.mixers.softmax import KVAttention


class QueryGroupAttention(KVAttention):
    """Attention with ``q_heads`` query heads of width ``dim / heads`` and ``kv_heads`` K/V heads, each
    shared by ``q_heads / kv_heads`` consecutive query heads (the grouping of ``kernels.attention``);
    the output projection maps ``q_heads * head_dim`` back to ``dim``. GQA (``q_heads == heads``) and
    SQA (fewer query heads, ``search_spaces/mixers/sqa.py``) are its two uses; each checks its heads."""

    def __init__(self, dim: int, *, causal: bool, heads: int, q_heads: int, kv_heads: int, qkv_bias: bool):
        super().__init__(dim, causal=causal)
        self.heads, self.q_heads, self.kv_heads = heads, q_heads, kv_heads
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, q_heads * self.head_dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * kv_heads * self.head_dim, bias=qkv_bias)
        self.proj = nn.Linear(q_heads * self.head_dim, dim)

    def decode_state(self, n: int) -> int:
        """Values a decoder keeps per sequence after ``n`` tokens: K and V of the kv_heads groups."""
        return 2 * n * self.kv_heads * self.head_dim

    def _qkv(self, x):
        B, N, _ = x.shape
        q = self.q(x).view(B, N, self.q_heads, self.head_dim).transpose(1, 2)  # (B, Hq, N, d)
        kv = self.kv(x).view(B, N, 2, self.kv_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (2, B, Hkv, N, d)
        return (q, *kv.unbind(0))


class GroupedQueryAttention(QueryGroupAttention):
    """Grouped-query attention (Ainslie et al. 2023; MQA: Shazeer 2019), the baseline of the SQA paper.

    ``heads`` query heads of width ``dim / heads``; ``kv_heads`` key/value heads, each shared by
    ``heads / kv_heads`` consecutive query heads (the grouping of ``kernels.attention``). The K/V
    projection has ``2 * kv_heads * head_dim`` outputs, heads / kv_heads times fewer than multi-head
    attention. With ``kv_heads == heads`` this is ``softmax`` exactly: the Q rows of softmax's
    ``qkv`` weight are ``q`` here and the K/V rows are ``kv``.
    """

    def __init__(self, dim: int, *, causal: bool = False, heads: int = 4, kv_heads: int = 2,
                 qkv_bias: bool = False):
        if dim % heads or heads % kv_heads:
            raise ValueError(f"need heads | dim and kv_heads | heads; got dim {dim}, heads {heads}, kv_heads {kv_heads}")
        super().__init__(dim, causal=causal, heads=heads, q_heads=heads, kv_heads=kv_heads, qkv_bias=qkv_bias)
