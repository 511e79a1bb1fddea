"""Which architectures a supernet trains: random ones, and the largest and smallest (sandwich rule).

Both go through :func:`search_spaces.sampling.sample` with a stand-in for an Optuna trial, so a
path is always an architecture the space can sample (the same rules, the same canonical form).
"""

from __future__ import annotations

import torch

from search_spaces.arch import ArchSpec
from search_spaces.sampling import sample
from search_spaces.space import Space

__all__ = ["ChoiceTrial", "extreme_arch", "random_arch"]

# string choices with a size order; any other string choice (a mixer, a pattern) takes the
# first one the space lists, for the largest and the smallest path alike
_STRING_SIZE = {"none": 0, "mlp": 2, "glu": 1}


class ChoiceTrial:
    """The part of an Optuna trial that :func:`sample` uses: ``suggest_categorical`` answered by
    ``pick(name, choices)``. ``params`` holds what was chosen."""

    def __init__(self, pick):
        self.pick = pick
        self.params: dict = {}

    def suggest_categorical(self, name: str, choices: list):
        value = self.pick(name, tuple(choices))
        self.params[name] = value
        return value


def random_arch(space: Space, generator: torch.Generator) -> ArchSpec:
    """An architecture with every choice drawn uniformly from ``generator`` (a torch generator,
    so its state can be saved and restored)."""

    def pick(name, choices):
        return choices[int(torch.randint(len(choices), (1,), generator=generator))]

    return sample(space, ChoiceTrial(pick))


def _size_key(value):
    if isinstance(value, str):
        return _STRING_SIZE.get(value, 0)
    return float(value)


def extreme_arch(space: Space, which: str) -> ArchSpec:
    """The ``largest`` or ``smallest`` architecture: every number (depth, width, heads, ratio...)
    at its largest or smallest choice, FFN none < glu < mlp, other strings the first listed."""
    if which not in ("largest", "smallest"):
        raise ValueError(f"which must be 'largest' or 'smallest', got {which!r}")
    best = max if which == "largest" else min

    def pick(name, choices):
        ordered = [c for c in choices if not isinstance(c, str) or c in _STRING_SIZE]
        if len(ordered) != len(choices):
            return choices[0]
        return best(choices, key=_size_key)

    return sample(space, ChoiceTrial(pick))
