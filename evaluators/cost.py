"""Static costs of a model: parameter count and forward FLOPs per sample."""

from __future__ import annotations

import torch

from evaluators.flops import count_flops
from search_spaces.task_io import TaskIO

__all__ = ["count_params", "flops_per_sample", "example_input", "decode_state_mb"]


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def example_input(io: TaskIO, batch: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = io.input_shape(batch)
    if io.kind == "tokens":
        return torch.randint(0, io.vocab_size, shape, generator=g)
    return torch.randn(shape, generator=g)


def flops_per_sample(model: torch.nn.Module, io: TaskIO) -> int:
    """Forward FLOPs for one sample in eval mode, by :func:`evaluators.flops.count_flops`:
    matmuls, convolutions, attention (the pairs its mask leaves open) and FFTs (5 n log2 n per
    complex transform of n points, half for real ones); elementwise ops, softmax, norms and
    pooling are not counted. The conventions are in :mod:`evaluators.flops`."""
    model.eval()
    return count_flops(model, example_input(io, 1))


def decode_state_mb(model: torch.nn.Module, n: int, bytes_per_value: int = 4):
    """Memory a causal decoder keeps per sequence after ``n`` tokens, summed over the mixers (KV
    caches, recurrent states, windows; see each mixer's ``decode_state``), in MiB at
    ``bytes_per_value``. None if some mixer does not define it."""
    from search_spaces.mixer import Mixer

    total = 0
    for m in model.modules():
        if isinstance(m, Mixer):
            v = m.decode_state(n)
            if v is None:
                return None
            total += v
    return total * bytes_per_value / 2**20
