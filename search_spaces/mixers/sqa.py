"""Sparse Query Attention (SQA): fewer query heads than the head budget, so fewer score maps."""

from __future__ import annotations

from search_spaces.mixers.gqa import QueryGroupAttention
from search_spaces.mixers.rules import sqa_heads_rule


class SparseQueryAttention(QueryGroupAttention):
    """Sparse Query Attention (Filipek 2025): reduce query heads instead of K/V heads.

    Head width ``d = dim / heads`` is set by the budget H = ``heads``, but only ``q_heads`` query
    heads are computed (Q projection to H_q * d), with ``kv_heads`` K/V heads shared GQA-style by
    groups of query heads. The score and value products cost 2 * B * H_q * N^2 * d each: H_q / H of
    multi-head attention. The output projection maps H_q * d back to ``dim``. With H_q = H_kv = H/2
    this is the paper's symmetric sSQA; H_q = H_kv = H/4 its extreme xSQA.
    """

    def __init__(self, dim: int, *, causal: bool = False, heads: int = 4, q_heads: int = 2, kv_heads: int = 2,
                 qkv_bias: bool = False):
        err = sqa_heads_rule(dim, {"heads": heads, "q_heads": q_heads, "kv_heads": kv_heads})
        if dim % heads or err:
            raise ValueError(err[1] if err else f"heads {heads} does not divide dim {dim}")
        super().__init__(dim, causal=causal, heads=heads, q_heads=q_heads, kv_heads=kv_heads, qkv_bias=qkv_bias)
