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
it. A mixer is declared once:

* a built-in mixer by :func:`declare_mixer` in ``search_spaces/mixers/__init__.py``, as data that
  names its class (``"search_spaces.mixers.softmax:SoftmaxAttention"``); the class carries no
  declaration of its own, and its module (torch) is imported when the class is first asked for;
* a plugin's mixer by the decorator on its class, ``@register_mixer(name, params=..., causal=...)``,
  which is the same declaration with the class at hand.

Declaring a name twice is an error.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from kernels.registry import Registry
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
    with ``heads: scale`` multiplies it with the width (``search_spaces.deploy_profiles.scale_arch``).
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


@dataclass(frozen=True)
class MixerInfo:
    """A mixer's entry: what it accepts, as data. Its class is ``class_name`` in ``module`` (imported
    by :attr:`cls`); ``defined`` is the class itself where a decorator registered it."""

    name: str
    module: str
    class_name: str
    params: dict
    causal: bool
    needs_2d: bool = False
    rules: tuple = ()
    family: str = "attention"
    defined: Optional[type] = field(default=None, compare=False, repr=False)

    def defaults(self) -> dict:
        return {k: p.default for k, p in self.params.items()}

    @property
    def target(self) -> str:
        """Where the class is, as ``module:Class``."""
        return f"{self.module}:{self.class_name}"

    @property
    def cls(self) -> type:
        """The mixer's class (its module is imported on first use). The declaration's causal
        support is given to the class (``supports_causal``), so it refuses ``causal=True`` where
        the declaration says no."""
        cls = self.defined if self.defined is not None else self._find_class()
        cls.supports_causal = self.causal
        return cls

    def _find_class(self) -> type:
        obj = importlib.import_module(self.module)
        for part in self.class_name.split("."):
            obj = getattr(obj, part, None)
        if not isinstance(obj, type):
            raise LookupError(f"mixer {self.name!r} is declared as {self.target}, but {self.module} defines "
                              f"no class {self.class_name}")
        return obj

    @property
    def doc(self) -> str:
        """The first paragraph of the class's docstring, on one line."""
        return " ".join((self.cls.__doc__ or "").strip().split("\n\n")[0].split())


def _mixer_entry(name: str, cls: type, *, params: Optional[dict] = None, causal: bool, needs_2d: bool = False,
                 rules: tuple = (), family: str = "attention") -> MixerInfo:
    return MixerInfo(name=name, module=cls.__module__, class_name=cls.__qualname__, params=dict(params or {}),
                     causal=causal, needs_2d=needs_2d, rules=tuple(rules), family=family, defined=cls)


# the built-in mixers are declared in search_spaces/mixers/__init__.py (no torch imported there)
MIXERS: Registry[MixerInfo] = Registry("mixer", builtins=("search_spaces.mixers",), entry=_mixer_entry)


def declare_mixer(name: str, target: str, *, params: Optional[dict] = None, causal: bool, needs_2d: bool = False,
                  rules: tuple = (), family: str = "attention") -> MixerInfo:
    """Declare the mixer ``name`` whose class is ``target``, ``"module:Class"``, imported when first
    needed (see the module docstring). ValueError if the name is taken or ``target`` is malformed."""
    module, sep, class_name = target.partition(":")
    if not (module and sep and class_name):
        raise ValueError(f"mixer {name!r}: {target!r} must name its class as 'module:Class'")
    return MIXERS.add(name, MixerInfo(name=name, module=module, class_name=class_name, params=dict(params or {}),
                                      causal=causal, needs_2d=needs_2d, rules=tuple(rules), family=family))


def register_mixer(
    name: str,
    *,
    params: Optional[dict] = None,
    causal: Optional[bool] = None,
    needs_2d: bool = False,
    rules: tuple = (),
    family: str = "attention",
):
    """Class decorator that declares the mixer ``name`` with the decorated class (a plugin's mixer,
    see the module docstring): its parameters, whether it supports causal use, and so on, as
    :func:`declare_mixer` takes them. ValueError if the name is taken."""
    if causal is None:
        raise TypeError(f"register_mixer({name!r}): say whether it supports causal use (causal=True or False)")
    return MIXERS.register(name, params=params, causal=causal, needs_2d=needs_2d, rules=rules, family=family)


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
