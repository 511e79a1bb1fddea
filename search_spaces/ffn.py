"""Channel-mixing feed-forward choices (timm's Mlp / GluMlp), registered by name."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn
from timm.layers import GluMlp, Mlp

__all__ = ["build_ffn", "list_ffns", "register_ffn"]

_FFNS: dict[str, Callable[[int, float], nn.Module]] = {}


def register_ffn(name: str):
    def deco(fn):
        _FFNS[name] = fn
        return fn

    return deco


def list_ffns() -> list[str]:
    return sorted(_FFNS)


def build_ffn(name: str, dim: int, ratio: float) -> nn.Module | None:
    if name not in _FFNS:
        raise KeyError(f"unknown FFN {name!r}; registered: {list_ffns()}")
    return _FFNS[name](dim, ratio)


@register_ffn("mlp")
def _mlp(dim: int, ratio: float) -> nn.Module:
    """Linear -> GELU -> Linear with hidden width ratio * dim."""
    return Mlp(dim, hidden_features=max(1, int(round(ratio * dim))), act_layer=nn.GELU)


@register_ffn("glu")
def _glu(dim: int, ratio: float) -> nn.Module:
    """SwiGLU: (SiLU(x W_g) * x W_v) W_o; hidden ratio * dim, split evenly into gate and value."""
    hidden = max(2, 2 * int(round(ratio * dim / 2)))
    return GluMlp(dim, hidden_features=hidden, act_layer=nn.SiLU, gate_last=False)


@register_ffn("none")
def _none(dim: int, ratio: float) -> None:
    """No FFN: the block is the mixer alone."""
    return None
