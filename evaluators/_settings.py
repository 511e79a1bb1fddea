"""Typed construction of settings dataclasses from a space file's mapping."""

from __future__ import annotations

from dataclasses import MISSING, fields


def settings_from_dict(cls, d: dict, section: str):
    """Build ``cls(**d)`` checking names and types against the fields' defaults; errors name the
    key (``train.steps``) and what is allowed."""
    known = {f.name: f for f in fields(cls)}
    out = {}
    for key, value in d.items():
        if key not in known:
            raise KeyError(f"{section}.{key}: unknown setting; allowed: {sorted(known)}")
        default = known[key].default
        if default is not MISSING and default is not None:
            kind = type(default)
            ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                ok, value = True, float(value)
            if not ok:
                raise TypeError(f"{section}.{key}: {value!r} must be of type {kind.__name__}")
            if kind in (int, float) and value < 0:
                raise TypeError(f"{section}.{key}: {value!r} must be >= 0")
        out[key] = value
    return cls(**out)
