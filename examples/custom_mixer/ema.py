"""A mixer and two metrics defined outside the package; a space file loads them with `plugins: [ema.py]`."""

import torch
import torch.nn.functional as F
from torch import nn

from evaluators.metrics import register_metric
from evaluators.tasks import IGNORE_INDEX
from search_spaces import Mixer, Param, register_mixer


@register_mixer("ema", params={"gate": Param(True, bool, doc="multiply by a sigmoid gate of the input")},
                causal=True, family="recurrent")
class EMAMixer(Mixer):
    """Exponential moving average per channel, y_t = (1 - a) x_t + a y_{t-1} with a learned
    decay a in (0, 1), optionally gated, then a linear projection. Causal by construction."""

    def __init__(self, dim: int, *, causal: bool = False, gate: bool = True):
        super().__init__(dim, causal=causal)
        self.decay_logit = nn.Parameter(torch.linspace(-2.0, 2.0, dim))  # a = sigmoid(logit)
        self.gate = nn.Linear(dim, dim) if gate else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, hw=None):  # x (B, N, C)
        n = x.shape[1]
        a = torch.sigmoid(self.decay_logit)  # (C,)
        t = torch.arange(n, device=x.device)
        lag = t[:, None] - t[None, :]  # (N, N): t - s
        weights = (1 - a) * a ** lag.clamp(min=0)[..., None]  # (N, N, C): (1 - a) a^(t - s)
        weights = weights * (lag >= 0)[..., None]  # only s <= t
        y = torch.einsum("tsc,bsc->btc", weights, x)  # (B, N, C)
        if self.gate is not None:
            y = y * torch.sigmoid(self.gate(x))
        return self.proj(y)


@register_metric("mixer_params", "minimize", at="init")
def mixer_params(model, task, settings) -> float:
    """Parameters in the token mixers (known before training, so a ladder filter may bound it)."""
    return float(sum(p.numel() for stage in model.stages for block in stage for p in block.mixer.parameters()))


@register_metric("test_loss", "minimize")
def test_loss(model, task, settings) -> float:
    """Cross-entropy of the trained model on the task's test split (positions with a target)."""
    x, y = task.split("test")
    with torch.no_grad():
        logits = model(x)  # (B, N, V) per token, (B, V) per sample
    return F.cross_entropy(logits.flatten(0, -2), y.flatten(), ignore_index=IGNORE_INDEX).item()
