"""Public names of a package imported on first use (PEP 562), so that importing the package or a
light submodule of it does not import what the heavy ones need (torch, timm, optuna).

    _EXPORTS = {"build_model": "search_spaces.builder", ...}   # name -> the module that defines it
    __all__ = sorted(_EXPORTS)
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable, Callable]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``: a name in ``exports`` is
    read from its module (and kept in the package's namespace, so later lookups skip this); any
    other name that is a submodule is imported, as when the package imported them all."""

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:  # a submodule (package.fit, ...)
            if importlib.util.find_spec(f"{package}.{name}") is None:
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
            return importlib.import_module(f"{package}.{name}")
        value = getattr(importlib.import_module(module), name)
        vars(sys.modules[package])[name] = value  # later lookups skip this function
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
