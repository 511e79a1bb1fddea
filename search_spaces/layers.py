"""The feed-forward layers the FFN choices build: a two-layer MLP and a gated (GLU) MLP.

Each token is mixed across channels only. Parameter names (``fc1``, ``fc2``) and creation order
are those of timm's ``Mlp`` / ``GluMlp``, which these replace, so checkpoints and seeded
initializations are the same as before.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["GluMlp", "Mlp"]


class Mlp(nn.Module):
    """``fc2(act(fc1(x)))``: Linear(dim -> hidden) -> activation -> Linear(hidden -> dim)."""

    def __init__(self, dim: int, hidden: int, act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., dim) -> (..., dim)
        return self.fc2(self.act(self.fc1(x)))


class GluMlp(nn.Module):
    """Gated MLP: ``fc1`` makes ``hidden`` channels, split into a gate ``g`` (first half) and a
    value ``v`` (second half); the output is ``fc2(act(g) * v)``. With SiLU: SwiGLU."""

    def __init__(self, dim: int, hidden: int, act_layer: type[nn.Module] = nn.SiLU):
        super().__init__()
        if hidden < 2 or hidden % 2:
            raise ValueError(f"GluMlp needs an even hidden width >= 2 (gate and value halves), got {hidden}")
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden // 2, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., dim) -> (..., dim)
        gate, value = self.fc1(x).chunk(2, dim=-1)  # (..., hidden / 2) each
        return self.fc2(self.act(gate) * value)
