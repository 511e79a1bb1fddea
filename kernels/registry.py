"""The one registration mechanism: a named :class:`Registry` per kind of extension.

Mixers, FFNs, tasks, metrics, zero-cost proxies, backends and the kernels' ops each keep one
``Registry``. Built-in entries are registered by explicit imports (a registry names the modules that
hold them in ``builtins`` and imports them on first use); user entries come from plugins
(:mod:`search_spaces.plugins`) that call the same ``register``. Looking up a name that is not
there raises :class:`UnknownName` with one message shape for every registry::

    unknown mixer 'mamba'; known: conv, fnet, gfnet, ...

A registry is a read-only mapping ``name -> entry``. ``register(name, **meta)`` is a decorator;
a registry built with an ``entry`` factory stores ``entry(name, obj, **meta)`` (e.g. a mixer's
:class:`~search_spaces.mixer_registry.MixerInfo` with its parameters and rules), otherwise the object
itself. Registering a name twice is an error.

This module lives in ``kernels``, the bottom layer, and imports nothing but the standard library,
so every layer (and the kernels' own op registry) can use it; ``search_spaces`` re-exports
``Registry`` and ``UnknownName``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Callable, Generic, Iterator, Optional, TypeVar

__all__ = ["Registry", "UnknownName"]

T = TypeVar("T")


class UnknownName(KeyError):
    """A name that no entry of a registry has. ``str(e)`` is the one-line message (a plain
    ``KeyError`` would show it quoted); ``kind``, ``name`` and ``known`` are kept."""

    def __init__(self, kind: str, name, known):
        self.kind, self.name, self.known = kind, name, list(known)
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(self.known) or 'none'}")

    def __str__(self) -> str:
        return self.args[0]


class Registry(Mapping, Generic[T]):
    """Entries of one kind by name. ``kind`` names it in messages (``"mixer"``); ``builtins``
    are modules imported on first use (their imports register the built-in entries);
    ``entry(name, obj, **meta)`` turns what ``register`` decorates into the stored entry."""

    def __init__(self, kind: str, *, builtins: tuple = (), entry: Optional[Callable[..., T]] = None):
        self.kind = kind
        self._builtins = tuple(builtins)
        self._entry = entry
        self._entries: dict[str, T] = {}
        self._loaded = not self._builtins

    def _load_builtins(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # set first: the modules imported below register into this registry
        try:
            for module in self._builtins:
                importlib.import_module(module)
        except BaseException:
            self._loaded = False
            raise

    # ------------------------------------------------------------------ registering
    def register(self, name: str, **meta) -> Callable:
        """Decorator: register the decorated class or function under ``name`` (``meta``: what the
        registry's ``entry`` factory takes, e.g. a mixer's parameters). Returns it unchanged."""
        if meta and self._entry is None:
            raise TypeError(f"the {self.kind} registry takes no metadata; got {sorted(meta)}")

        def deco(obj):
            self._check_free(name)
            self.add(name, self._entry(name, obj, **meta) if self._entry is not None else obj)
            return obj

        return deco

    def add(self, name: str, entry: T) -> T:
        """Store ``entry`` under ``name`` as it is. ValueError if the name is taken or not a string."""
        self._check_free(name)
        self._entries[name] = entry
        return entry

    def _check_free(self, name) -> None:
        self._load_builtins()  # a plugin's entry must not take a built-in's name
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return its entry (notebooks, tests); UnknownName if absent."""
        entry = self.get(name)
        del self._entries[name]
        return entry

    # ------------------------------------------------------------------ looking up
    def get(self, name: str) -> T:
        """The entry of ``name``; :class:`UnknownName` if there is none."""
        return self[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._load_builtins()
        return sorted(self._entries)

    def __getitem__(self, name: str) -> T:
        self._load_builtins()
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: an unhashable "name" from a malformed file
            raise UnknownName(self.kind, name, sorted(self._entries)) from None

    def __iter__(self) -> Iterator[str]:
        self._load_builtins()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._load_builtins()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
