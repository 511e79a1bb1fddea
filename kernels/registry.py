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

:func:`snapshot` records every registry's entries, and :meth:`Snapshot.restore` puts them back:
a plugin that fails while it is imported leaves nothing registered (:mod:`search_spaces.plugins`).

This module lives in ``kernels``, the bottom layer, and imports nothing but the standard library,
so every layer (and the kernels' own op registry) can use it; ``search_spaces`` re-exports
``Registry`` and ``UnknownName``.
"""

from __future__ import annotations

import importlib
import sys
import weakref
from collections.abc import Mapping
from typing import Callable, Generic, Iterator, Optional, TypeVar

__all__ = ["Registry", "Snapshot", "UnknownName", "snapshot"]

T = TypeVar("T")

_LIVE: list[weakref.ref] = []  # every Registry made (a Mapping is unhashable: no WeakSet)


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
        self._owners: dict[str, Optional[str]] = {}  # name -> the module whose import registered it
        self._loaded = not self._builtins
        _LIVE.append(weakref.ref(self))

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
        self._owners[name] = _importing_module()
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
        self._owners.pop(name, None)
        return entry

    def _restore(self, entries: dict, owners: dict, modules: set) -> None:
        """Back to ``entries``, but keep what modules imported since (not in ``modules``), and still
        imported, registered as they were imported."""
        kept = {n: (e, self._owners.get(n)) for n, e in self._entries.items() if n not in entries
                and self._owners.get(n) in sys.modules and self._owners.get(n) not in modules}
        self._entries.clear()
        self._entries.update(entries)
        self._owners.clear()
        self._owners.update(owners)
        for n, (entry, owner) in kept.items():
            self._entries[n], self._owners[n] = entry, owner

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


def _importing_module() -> Optional[str]:
    """The module whose top-level code runs the caller (the innermost ``<module>`` frame): the
    module being imported when an entry is registered as it is imported."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_name != "<module>":
        frame = frame.f_back
    return None if frame is None else frame.f_globals.get("__name__")


class Snapshot:
    """Every registry's entries at one moment (:func:`snapshot`). Two snapshots are equal when
    every registry held the same entries in both."""

    def __init__(self) -> None:
        self._held = [(r, dict(r._entries), dict(r._owners)) for r in (ref() for ref in _LIVE) if r is not None]
        self._modules = set(sys.modules)

    def restore(self) -> None:
        """Every registry as it was, but for the entries that modules imported since, and still
        imported, registered as they were imported: a module a failed plugin imported on its way (a
        registry's built-ins, loaded on first use; a library) will not be imported again to register
        them. A registry made since is left as it is."""
        for registry, entries, owners in self._held:
            registry._restore(entries, owners, self._modules)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Snapshot):
            return NotImplemented
        mine = {id(r): entries for r, entries, _ in self._held}
        theirs = {id(r): entries for r, entries, _ in other._held}
        return mine == theirs

    __hash__ = None


def snapshot() -> Snapshot:
    """Every registry's entries now; ``restore()`` puts them back (a failed plugin's are undone).
    Built-ins not yet loaded are not loaded: they are not entries yet."""
    _LIVE[:] = [ref for ref in _LIVE if ref() is not None]
    return Snapshot()
