"""Settings declared once, with their type and range, and checked where they are read.

A settings class is a frozen dataclass whose fields carry a :class:`Check`::

    @dataclass(frozen=True)
    class TrainConfig:
        steps: int = setting(100, low=1)            # an int >= 1
        lr: float = setting(3e-3, above=0)          # a number > 0
        device: str = setting("cpu", choices=("cpu", "cuda"))

    cfg = from_mapping(TrainConfig, {"steps": 0}, "train")
    # SettingError: train.steps: 0 is not allowed (an int >= 1)

Every user-facing setting (space file sections, mixer parameters, proxy ladder rungs, CLI
options) is checked by the one :meth:`Check.coerce`, so "an int but not a bool", "a finite
number" and "a number also when YAML 1.1 read ``2e6`` as text" mean the same everywhere, and
every refusal reads ``<key path>: <value> is not allowed (<what is allowed>)``.
"""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Optional

__all__ = ["Check", "SettingError", "as_mapping", "check_keys", "check_of", "from_mapping", "setting"]

_NOUNS = {int: "an int", float: "a number", bool: "true or false", str: "a string"}


class SettingError(ValueError):
    """A setting has a value that is not allowed. ``path`` names the key (``train.steps``)."""

    def __init__(self, path: str, message: str):
        self.path, self.message = path, message
        super().__init__(f"{path}: {message}" if path else message)

    def __reduce__(self):  # picklable (Ray sends errors between processes)
        return type(self), (self.path, self.message)


@dataclass(frozen=True)
class Check:
    """What one setting accepts: a type (int, float, bool or str), optional bounds and choices.

    ``low``/``high`` are inclusive bounds, ``above``/``below`` exclusive ones; ``optional``
    also accepts None (YAML ``null``); ``pattern`` (str settings) is a regular expression the whole
    value must match; ``what`` overrides the generated description (give one with ``pattern``).
    Numbers must be finite; an int is never a bool; a float setting takes ints and numeric
    text (YAML 1.1 reads ``2e6`` and ``3e-3`` as strings).
    """

    kind: type = int
    low: Optional[float] = None
    above: Optional[float] = None
    high: Optional[float] = None
    below: Optional[float] = None
    choices: Optional[tuple] = None
    optional: bool = False
    nonempty: bool = False  # str: not ""
    pattern: Optional[str] = None  # str: a regular expression the whole value must match
    what: str = ""

    def describe(self) -> str:
        """What is allowed, in words: ``an int >= 1``, ``a number in (0, 1]``, ``one of [...]``."""
        if self.what:
            return self.what
        if self.choices is not None:
            return f"one of {list(self.choices)}"
        text = _NOUNS.get(self.kind, f"a {self.kind.__name__}")
        if self.kind is str and self.nonempty:
            text = "a non-empty string"
        lo = self.low if self.low is not None else self.above
        hi = self.high if self.high is not None else self.below
        if lo is not None and hi is not None:
            text += f" in {'[' if self.low is not None else '('}{_num(lo)}, {_num(hi)}{']' if self.high is not None else ')'}"
        elif lo is not None:
            text += f" {'>=' if self.low is not None else '>'} {_num(lo)}"
        elif hi is not None:
            text += f" {'<=' if self.high is not None else '<'} {_num(hi)}"
        return text + (", or null" if self.optional else "")

    def error(self, value) -> Optional[str]:
        """None if ``value`` is allowed, else ``<value> is not allowed (<what is allowed>)``."""
        try:
            self.coerce(value)
        except SettingError as e:
            return e.message
        return None

    def coerce(self, value, path: str = ""):
        """``value`` as the setting's type (an int given to a float setting becomes a float), or
        :class:`SettingError` at ``path``."""
        if value is None and self.optional:
            return None
        v = self._typed(value)
        if v is None or not self._in_range(v):
            raise SettingError(path, f"{_show(value)} is not allowed ({self.describe()})")
        return v

    def _typed(self, value):
        if self.kind is bool:
            return value if isinstance(value, bool) else None
        if self.kind is int:
            return value if isinstance(value, int) and not isinstance(value, bool) else None
        if self.kind is float:
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    return None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return None
            try:
                value = float(value)
            except OverflowError:  # an int beyond the float range
                return None
            return value if math.isfinite(value) else None
        return value if isinstance(value, self.kind) else None

    def _in_range(self, v) -> bool:
        if self.choices is not None:
            return v in self.choices
        if self.kind is str:
            return (bool(v) or not self.nonempty) and (self.pattern is None or re.fullmatch(self.pattern, v) is not None)
        if self.kind is bool:
            return True
        return ((self.low is None or v >= self.low) and (self.above is None or v > self.above)
                and (self.high is None or v <= self.high) and (self.below is None or v < self.below))


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _show(value) -> str:
    """A value as the user wrote it, kept to one short line."""
    try:
        text = repr(value)
    except ValueError:  # an int with more digits than Python will print
        return f"an int of about {int(value.bit_length() * 0.30103)} digits"
    return text if len(text) <= 60 else text[:57] + "..."


def setting(default: Any = MISSING, *, kind: Optional[type] = None, doc: str = "", **check) -> Any:
    """A dataclass field with its :class:`Check` (``kind`` defaults to the default's type)."""
    if kind is None:
        if default is MISSING or default is None:
            raise TypeError("setting() needs kind= when there is no typed default")
        kind = float if isinstance(default, float) else type(default)
    meta = {"check": Check(kind, **check), "doc": doc}
    return field(metadata=meta) if default is MISSING else field(default=default, metadata=meta)


def check_of(cls, name: str) -> Check:
    """The :class:`Check` declared on field ``name`` of the settings class ``cls``."""
    for f in fields(cls):
        if f.name == name:
            return f.metadata["check"]
    raise KeyError(f"{cls.__name__} has no setting {name!r}")


def as_mapping(d, path: str) -> dict:
    """``d`` if it is a mapping, {} for None (an empty YAML section), else :class:`SettingError`."""
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise SettingError(path, f"{_show(d)} is not allowed (a mapping)")
    return d


def check_keys(d, allowed, path: str, what: str = "key") -> dict:
    """``d`` must be a mapping whose keys are among ``allowed``; returns it (None -> {})."""
    d = as_mapping(d, path)
    unknown = sorted((k for k in d if k not in allowed), key=str)
    if unknown:
        key = unknown[0]
        raise SettingError(f"{path}.{key}" if path else str(key), f"unknown {what}; allowed: {sorted(allowed)}")
    return d


def from_mapping(cls, d, path: str):
    """``cls(**d)`` with every key known and every value checked against its field's
    :class:`Check`; a :class:`SettingError` names ``path.key`` and what is allowed."""
    known = {f.name: f for f in fields(cls) if "check" in f.metadata}
    d = check_keys(d, known, path, "setting")
    return cls(**{k: known[k].metadata["check"].coerce(v, f"{path}.{k}") for k, v in d.items()})
