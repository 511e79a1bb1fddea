"""Channel-mixing feed-forward choices (:mod:`search_spaces.layers`), registered by name.

The registry and its names need no torch (a space's ``ffn.type`` is checked without it); a
builder imports the layers when it builds one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from kernels.registry import Registry

if TYPE_CHECKING:
    import torch.nn as nn

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
    from search_spaces.layers import Mlp

    return Mlp(dim, max(1, int(round(ratio * dim))))  # GELU


@register_ffn("glu")
def _glu(dim: int, ratio: float) -> nn.Module:
    """SwiGLU: (SiLU(x W_g) * x W_v) W_o; hidden ratio * dim, split evenly into gate and value."""
    from search_spaces.layers import GluMlp

    hidden = max(2, 2 * int(round(ratio * dim / 2)))
    return GluMlp(dim, hidden)  # SiLU


@register_ffn("none")
def _none(dim: int, ratio: float) -> None:
    """No FFN: the block is the mixer alone."""
    return None
