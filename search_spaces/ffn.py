"""Channel-mixing feed-forward choices (timm's Mlp / GluMlp), registered by name."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn
from timm.layers import GluMlp, Mlp

from search_spaces.registries import Registry

__all__ = ["FFNS", "build_ffn", "list_ffns", "register_ffn"]

# name -> fn(dim, ratio) -> nn.Module | None; the built-ins are defined below
FFNS: Registry[Callable[[int, float], nn.Module | None]] = Registry("FFN")


def register_ffn(name: str):
    """Decorator: register ``fn(dim, ratio) -> nn.Module | None`` as the FFN ``name``."""
    return FFNS.register(name)


def list_ffns() -> list[str]:
    return FFNS.names()


def build_ffn(name: str, dim: int, ratio: float) -> nn.Module | None:
    return FFNS.get(name)(dim, ratio)


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
