"""Activator's attention-free core: a gated linear unit MLP applied to each token."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from search_spaces.mixer import Mixer
from search_spaces.mixers.rules import GLU_GATES

# GLU, GEGLU, SwiGLU, ReGLU (Shazeer 2020), in the order of the declared choices
_GATES = dict(zip(GLU_GATES, (torch.sigmoid, F.gelu, F.silu, F.relu), strict=True))


class GLUMixer(Mixer):
    """Gated linear unit MLP as the token mixer (Activator, Abdullah & Aydin 2024).

    y = W_out (act(W_gate x) * (W_value x)), applied to each token on its own. Activator replaces
    self-attention by this GLU MLP (GLU variants after Shazeer, "GLU Variants Improve Transformer");
    mixing across tokens then comes only from the rest of the network (stem, downsampling, other
    mixers). Token-wise, so causal by construction and indifferent to ``hw``.
    """

    def __init__(self, dim: int, *, causal: bool = False, ratio: float = 2.0, act: str = "gelu",
                 bias: bool = True):
        super().__init__(dim, causal=causal)
        if act not in _GATES:
            raise ValueError(f"act {act!r} is not one of {sorted(_GATES)}")
        hidden = max(1, int(round(dim * ratio)))
        self.act = _GATES[act]
        self.fc_in = nn.Linear(dim, 2 * hidden, bias=bias)  # gate and value in one matmul
        self.fc_out = nn.Linear(hidden, dim, bias=bias)

    def decode_state(self, n: int) -> int:
        """Values a decoder keeps per sequence after ``n`` tokens: nothing (token-wise)."""
        return 0

    def forward(self, x, hw=None):
        gate, value = self.fc_in(x).chunk(2, dim=-1)  # (B, N, hidden) each
        return self.fc_out(self.act(gate) * value)

    def _init_cache(self, batch, max_len, device, dtype):
        return {}, {}  # token-wise: nothing to keep

    def _extend(self, x, cache):
        return self(x), cache.advanced(x.shape[1])

    _prefill = _step = _extend
