"""The one mixer registry: names, parameters with their allowed values, and supported modes.

A mixer is a class ``Mixer(dim, *, causal, **params)`` (:mod:`search_spaces.mixer`) whose
``forward(x[B, N, C], hw=None)`` returns ``[B, N, C]``. Its entry records

* ``params``: each parameter's default and what values it accepts (:class:`Param`);
* ``causal``: whether the mixer supports causal use (token t never sees tokens after t);
* ``needs_2d``: whether it needs the (H, W) token grid (``hw``) to work;
* ``rules``: checks that involve the width or several parameters, e.g. heads dividing dim;
* ``family``: the kind of mixer (attention, hyena, spectral, ...), a column of the results.

Spaces, ArchSpec validation, the results and the tests all read this registry, so a new mixer is
searchable and tested as soon as it is registered. The entries are plain data, and this module
imports no torch: a space is parsed, counted and checked, and a study's results are read, without
it. The built-in mixers are declared as data in ``search_spaces/mixers/__init__.py``
(:func:`declare_mixer`, naming the module that holds the class); that module's class says
``@register_mixer(name)`` and is imported when the class is first asked for. A plugin's mixer is
declared and registered at once: ``@register_mixer(name, params=..., causal=...)``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Optional

from search_spaces.registries import Registry
from search_spaces.schema import Check

__all__ = [
    "MIXERS",
    "MixerInfo",
    "Param",
    "declare_mixer",
    "divides",
    "get_mixer",
    "get_mixer_info",
    "list_mixers",
    "register_mixer",
]

# the mixer contract (torch) lives in search_spaces.mixer; these names are still found here, on first use
_CONTRACT = ("Mixer", "MixerCache", "kv_buffers")


@dataclass(frozen=True)
class Param:
    """A mixer parameter: its default and the values it accepts.

    ``kind`` is one of ``int``, ``float``, ``bool``, ``str``. ``choices`` restricts to a set;
    ``low``/``high`` bound numbers (inclusive). ``counts_heads``: the parameter counts heads
    (query, key/value, shared or routed heads), so a deployment profile that widens the model
    with ``heads: scale`` multiplies it with the width (``search_spaces.profiles.scale_arch``).
    """

    default: Any
    kind: type = int
    choices: Optional[tuple] = None
    low: Optional[float] = None
    high: Optional[float] = None
    doc: str = ""
    counts_heads: bool = False

    def as_check(self) -> Check:
        """The parameter's :class:`search_spaces.schema.Check` (type, bounds, choices)."""
        return Check(self.kind, low=self.low, high=self.high, choices=self.choices)

    def check(self, value) -> Optional[str]:
        """None if ``value`` is allowed, else a message saying what is allowed."""
        return self.as_check().error(value)


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


# mixer name -> its class, once the module that holds it has been imported
_CLASSES: dict[str, type] = {}


@dataclass(frozen=True)
class MixerInfo:
    """A mixer's entry: what it accepts, as data. ``module`` holds its class (imported by :attr:`cls`)."""

    name: str
    module: str
    params: dict
    causal: bool
    needs_2d: bool = False
    rules: tuple = ()
    family: str = "attention"

    def defaults(self) -> dict:
        return {k: p.default for k, p in self.params.items()}

    @property
    def cls(self) -> type:
        """The mixer's class (its module is imported on first use)."""
        if self.name not in _CLASSES:
            importlib.import_module(self.module)
            if self.name not in _CLASSES:
                raise LookupError(f"module {self.module} declares no class for mixer {self.name!r} "
                                  f"(a class decorated with @register_mixer({self.name!r}))")
        return _CLASSES[self.name]

    @property
    def doc(self) -> str:
        """The first paragraph of the class's docstring, on one line."""
        return " ".join((self.cls.__doc__ or "").strip().split("\n\n")[0].split())


def _mixer_entry(name: str, cls: type, *, params: Optional[dict] = None, causal: bool, needs_2d: bool = False,
                 rules: tuple = (), family: str = "attention") -> MixerInfo:
    info = MixerInfo(name=name, module=cls.__module__, params=dict(params or {}), causal=causal,
                     needs_2d=needs_2d, rules=tuple(rules), family=family)
    _bind(info, cls)
    return info


def _bind(info: MixerInfo, cls: type) -> None:
    cls.supports_causal = info.causal
    _CLASSES[info.name] = cls


# the built-in mixers are declared in search_spaces/mixers/__init__.py (no torch imported there)
MIXERS: Registry[MixerInfo] = Registry("mixer", builtins=("search_spaces.mixers",), entry=_mixer_entry)


def declare_mixer(name: str, module: str, *, params: Optional[dict] = None, causal: bool, needs_2d: bool = False,
                  rules: tuple = (), family: str = "attention") -> MixerInfo:
    """Add the entry of a mixer whose class, in ``module``, is imported when first needed; the class
    says ``@register_mixer(name)``. ValueError if the name is taken."""
    return MIXERS.add(name, MixerInfo(name=name, module=module, params=dict(params or {}), causal=causal,
                                      needs_2d=needs_2d, rules=tuple(rules), family=family))


def register_mixer(
    name: str,
    *,
    params: Optional[dict] = None,
    causal: Optional[bool] = None,
    needs_2d: bool = False,
    rules: tuple = (),
    family: str = "attention",
):
    """Class decorator that adds a mixer to the registry under ``name`` (see the module docstring).
    With ``name`` alone it gives a declared mixer (:func:`declare_mixer`) its class."""
    if causal is not None:
        return MIXERS.register(name, params=params, causal=causal, needs_2d=needs_2d, rules=rules, family=family)
    if params is not None or needs_2d or rules or family != "attention":
        raise TypeError(f"register_mixer({name!r}): say whether it supports causal use (causal=True or False)")

    def bind(cls: type) -> type:
        if name not in MIXERS:
            raise TypeError(f"mixer {name!r} is not declared: register it with its params and causal=True or False")
        info = MIXERS.get(name)
        if info.module != cls.__module__ or name in _CLASSES:
            raise ValueError(f"mixer {name!r} is declared for module {info.module}; {cls.__module__}.{cls.__name__} "
                             f"cannot take it (give its params and causal=... to register a new mixer)")
        _bind(info, cls)
        return cls

    return bind


def list_mixers() -> list[str]:
    return MIXERS.names()


def get_mixer_info(name: str) -> MixerInfo:
    return MIXERS.get(name)


def get_mixer(name: str) -> type:
    return get_mixer_info(name).cls


def __getattr__(name: str):
    if name in _CONTRACT:
        from search_spaces import mixer

        return getattr(mixer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
