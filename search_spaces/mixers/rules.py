"""Rules of the built-in mixers that involve the width or several parameters, and the names of
their string choices: plain functions and tuples, no torch, read by the declarations in
``search_spaces/mixers/__init__.py`` (spaces, validation) and by the mixers' constructors.

A rule is ``rule(dim, params) -> None | (param, message)``.
"""

from __future__ import annotations

__all__ = ["GLU_GATES", "LINEAR_FEATURES", "SINGLE_HEAD_RATIOS", "diff_heads_rule", "kv_heads_divide_heads",
           "moh_heads_rule", "partial_dims", "sqa_heads_rule", "strip_heads_rule", "topk_within_regions"]

GLU_GATES = ("sigmoid", "gelu", "silu", "relu")  # GLU, GEGLU, SwiGLU, ReGLU (Shazeer 2020)
LINEAR_FEATURES = ("elu", "relu")  # phi(x) = elu(x) + 1 (Katharopoulos et al. 2020), relu (cosFormer)
SINGLE_HEAD_RATIOS = (0.125, 0.25, 0.5, 1.0)


def _divides(param: str, n: int, what: str, total: int):
    """``(param, message)`` unless ``n`` (>= 1) divides ``total`` (parameter ``what``)."""
    if n < 1 or total % n:
        return param, f"{n} does not divide {what} {total}"
    return None


def diff_heads_rule(dim: int, params: dict):
    """Rule: 2 * heads divides dim (Q/K width d = dim / (2 heads)) and noise_heads divides heads."""
    h = params["heads"]
    if h < 1 or dim % (2 * h):
        return "heads", f"2 x {h} does not divide dim {dim}"
    return _divides("noise_heads", params["noise_heads"], "heads", h)


def kv_heads_divide_heads(dim: int, params: dict):
    """Rule: ``kv_heads`` divides ``heads`` (each K/V head serves heads / kv_heads query heads)."""
    return _divides("kv_heads", params["kv_heads"], "heads", params["heads"])


def moh_heads_rule(dim: int, params: dict):
    """Rule: shared < heads (at least one routed head) and 1 <= topk <= heads - shared."""
    h, s, k = params["heads"], params["shared"], params["topk"]
    if s >= h:
        return "shared", f"{s} leaves no routed head out of heads={h}"
    if not 1 <= k <= h - s:
        return "topk", f"{k} is not between 1 and the {h - s} routed heads"
    return None


def topk_within_regions(dim: int, params: dict):
    """Rule: 1 <= topk <= regions^2 (the number of regions)."""
    s, k = params["regions"], params["topk"]
    if not 1 <= k <= s * s:
        return "topk", f"{k} is not between 1 and the {s * s} regions"
    return None


def partial_dims(dim: int, params: dict):
    """Rule: ``ratio * dim`` is a whole number of channels, at least one."""
    p = dim * params["ratio"]
    if p < 1 or p != int(p):
        return "ratio", f"{params['ratio']} of dim {dim} is not a whole number of channels"
    return None


def sqa_heads_rule(dim: int, params: dict):
    """Rule: kv_heads | q_heads <= heads (K/V heads are shared by groups of query heads)."""
    h, hq = params["heads"], params["q_heads"]
    if hq > h:
        return "q_heads", f"{hq} is more than the head budget heads={h}"
    return _divides("kv_heads", params["kv_heads"], "q_heads", hq)


def strip_heads_rule(dim: int, params: dict):
    """Rule: heads * qk_ratio divides dim (each head's Q/K width is head_dim / qk_ratio)."""
    h, r = params["heads"], params["qk_ratio"]
    if h < 1 or dim % (h * r):
        return "heads", f"{h} heads x qk_ratio {r} does not divide dim {dim}"
    return None
