"""The one mixer registry: names, parameters with their allowed values, and supported modes.

A mixer is a class ``Mixer(dim, *, causal, **params)`` whose ``forward(x[B, N, C], hw=None)``
returns ``[B, N, C]``. It is registered with :func:`register_mixer`, which records

* ``params``: each parameter's default and what values it accepts (:class:`Param`);
* ``causal``: whether the mixer supports causal use (token t never sees tokens after t);
* ``needs_2d``: whether it needs the (H, W) token grid (``hw``) to work;
* ``rules``: checks that involve the width or several parameters, e.g. heads dividing dim.

Spaces, ArchSpec validation and the tests all read this registry, so a new mixer is searchable
and tested as soon as it is registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch.nn as nn

__all__ = [
    "Mixer",
    "MixerInfo",
    "Param",
    "divides",
    "get_mixer",
    "get_mixer_info",
    "list_mixers",
    "register_mixer",
]


@dataclass(frozen=True)
class Param:
    """A mixer parameter: its default and the values it accepts.

    ``kind`` is one of ``int``, ``float``, ``bool``, ``str``. ``choices`` restricts to a set;
    ``low``/``high`` bound numbers (inclusive).
    """

    default: Any
    kind: type = int
    choices: Optional[tuple] = None
    low: Optional[float] = None
    high: Optional[float] = None
    doc: str = ""

    def check(self, value) -> Optional[str]:
        """None if ``value`` is allowed, else a message saying what is allowed."""
        if self.kind is bool:
            ok = isinstance(value, bool)
        elif self.kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, self.kind)
        if not ok:
            return f"{value!r} must be of type {self.kind.__name__}"
        if self.choices is not None and value not in self.choices:
            return f"{value!r} is not one of {list(self.choices)}"
        if self.low is not None and value < self.low:
            return f"{value!r} is below the minimum {self.low}"
        if self.high is not None and value > self.high:
            return f"{value!r} is above the maximum {self.high}"
        return None


Rule = Callable[[int, dict], Optional[tuple]]


def divides(param: str, what: str = "dim") -> Rule:
    """Rule: ``params[param]`` divides the stage width."""

    def rule(dim: int, params: dict):
        n = params[param]
        if n < 1 or dim % n:
            return param, f"{n} does not divide {what} {dim}"
        return None

    rule.__name__ = f"{param}_divides_{what}"
    return rule


@dataclass(frozen=True)
class MixerInfo:
    name: str
    cls: type
    params: dict
    causal: bool
    needs_2d: bool = False
    rules: tuple = ()
    doc: str = ""
    family: str = "attention"

    def defaults(self) -> dict:
        return {k: p.default for k, p in self.params.items()}


_REGISTRY: dict[str, MixerInfo] = {}


class Mixer(nn.Module):
    """Base class of token mixers. Subclasses call ``super().__init__(dim, causal=causal)``.

    A mixer whose parameters depend on the token layout (a 2-D filter or kernel on an image grid,
    a 1-D one on a sequence) sets ``grid_aware = True`` and takes a ``grid: bool`` keyword; the
    model builder passes ``grid=True`` for image tasks, so no parameter sits unused.
    """

    supports_causal: bool = True
    grid_aware: bool = False

    def __init__(self, dim: int, *, causal: bool = False):
        super().__init__()
        if causal and not self.supports_causal:
            raise ValueError(f"{type(self).__name__} does not support causal use")
        self.dim = dim
        self.causal = causal

    def forward(self, x, hw=None):  # pragma: no cover - abstract
        raise NotImplementedError

    def decode_state(self, n: int):
        """Values (activations) a causal decoder keeps per sequence after ``n`` tokens: the KV
        cache, a recurrent state, a window. None where not defined (non-causal mixers)."""
        return None


def register_mixer(
    name: str,
    *,
    params: Optional[dict] = None,
    causal: bool,
    needs_2d: bool = False,
    rules: tuple = (),
    family: str = "attention",
):
    """Class decorator that adds a mixer to the registry under ``name``."""

    def deco(cls):
        if name in _REGISTRY:
            raise ValueError(f"mixer {name!r} is registered twice")
        cls.supports_causal = causal
        _REGISTRY[name] = MixerInfo(
            name=name,
            cls=cls,
            params=dict(params or {}),
            causal=causal,
            needs_2d=needs_2d,
            rules=tuple(rules),
            doc=" ".join((cls.__doc__ or "").strip().split("\n\n")[0].split()),  # first paragraph
            family=family,
        )
        return cls

    return deco


def _ensure_loaded():
    # Importing the package registers the built-in mixers.
    import search_spaces.mixers  # noqa: F401


def list_mixers() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_mixer_info(name: str) -> MixerInfo:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown mixer {name!r}; registered: {sorted(_REGISTRY)}") from None


def get_mixer(name: str) -> type:
    return get_mixer_info(name).cls
