"""Plugins: user modules that register mixers, FFNs, tasks or metrics before a space is read.

A plugin is named by a string, in a space file's ``plugins:`` list or by ``nas ... --plugin``:

* a module name (``my_lab.mixers``), imported as usual: it must be importable wherever models
  are built (installed, or on ``PYTHONPATH``);
* a path to a ``.py`` file (``mixers.py``; relative paths are taken from the space file's folder,
  or from the current directory for ``--plugin``).

Installed packages declare plugins in the entry-point group ``mixer_nas.plugins`` (each entry
names a module); every process that loads plugins imports them, as pytest does with its plugins.

:func:`resolve_plugins` turns names into :class:`Plugin` records, which are plain data: a study
stores them with its config (``Plugin.to_dict``) and every process that builds models, Ray
workers on other machines included, calls :func:`load_plugins` with them first. A ``.py``
plugin's record carries the file's absolute path *and its text*, so it loads from the stored text
on every node without a shared file system, and a resumed study runs the code it was made with.
Loading is idempotent: a module already imported (a ``.py`` file gets the module name
``mixer_nas_plugin_<stem>_<hash of its text>``) is not imported again. A plugin that is missing
or raises while it is imported (``SystemExit`` and its own ``KeyboardInterrupt`` included) is a
:class:`PluginError` whose message names it, and its import is undone: its modules leave
``sys.modules`` and whatever it registered (mixers, FFNs, tasks, metrics, zero-cost proxies,
backends) is unregistered, so that the same process can load it again once it is fixed. A stop
signal that lands during the import (a ``KeyboardInterrupt`` carrying ``signum``, raised by
:mod:`nas.engine.interrupts`) undoes it too, and goes on as the stop it is.

Stored code is someone else's code until the user says otherwise: :func:`untrusted_plugins` names
the ``.py`` records whose text would run and is not the user's own (not imported in this process
yet, and no file at the stored path with the same text), which the commands that load a study's
or a model folder's plugins run only with the user's opt-in (``--trust-code``, ``trust_code=True``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.abc
import importlib.metadata
import importlib.util
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional

from kernels.registry import snapshot as registry_snapshot
from search_spaces.failures import failure_reason

__all__ = ["ENTRY_POINT_GROUP", "Plugin", "PluginError", "installed_plugins", "load_plugins", "load_space_plugins",
           "plugin_of", "resolve_plugins", "untrusted_plugins"]

ENTRY_POINT_GROUP = "mixer_nas.plugins"
_MODULE_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class PluginError(ValueError):
    """A plugin could not be found or failed while it was imported. ``message`` names the plugin;
    ``key`` says where it was named (``plugins[1]`` of a space file), or is empty."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}" if key else message)

    def __reduce__(self):
        return type(self), (self.key, self.message)


@dataclass(frozen=True)
class Plugin:
    """One plugin: ``name`` as the user wrote it; ``module`` to import, or ``path`` (absolute)
    and ``code`` (the file's text) of a ``.py`` file."""

    name: str
    module: Optional[str] = None
    path: Optional[str] = None
    code: Optional[str] = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> "Plugin":
        return cls(**d)

    @property
    def module_name(self) -> str:
        """The name it has in ``sys.modules`` once loaded."""
        if self.module is not None:
            return self.module
        stem = re.sub(r"\W", "_", Path(self.path).stem)
        return f"mixer_nas_plugin_{stem}_{hashlib.sha1(self.code.encode()).hexdigest()[:10]}"


def resolve_plugins(names, base_dir: Path | str, *, key: str = "plugins") -> list[Plugin]:
    """Plugin records for ``names`` (module names or ``.py`` paths relative to ``base_dir``); a
    ``.py`` file is read now. A malformed name or a missing file is a PluginError at ``key[i]``."""
    if names is None:
        return []
    if not isinstance(names, (list, tuple)):
        raise PluginError(key, f"{names!r} must be a list of module names or .py paths")
    out = []
    for i, name in enumerate(names):
        at = f"{key}[{i}]"
        if not isinstance(name, str) or not name.strip():
            raise PluginError(at, f"{name!r} must be a module name or a path to a .py file")
        if name.endswith(".py"):
            path = (Path(base_dir) / name).expanduser().resolve()
            try:
                code = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise PluginError(at, f"plugin {name!r}: cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
            out.append(Plugin(name, path=str(path), code=code))
        elif _MODULE_NAME.match(name):
            out.append(Plugin(name, module=name))
        else:
            raise PluginError(at, f"{name!r} is neither a module name (my_lab.mixers) nor a path ending in .py")
    return out


@functools.lru_cache(maxsize=1)
def installed_plugins() -> tuple[Plugin, ...]:
    """Plugins of installed packages: the ``mixer_nas.plugins`` entry points, each naming a module.
    Read once per process (``installed_plugins.cache_clear()`` reads them again)."""
    out = []
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = getattr(getattr(ep, "dist", None), "name", None) or "?"
        if not _MODULE_NAME.match(ep.value):
            raise PluginError("", f"entry point {ep.name!r} of {dist} in group {ENTRY_POINT_GROUP}: {ep.value!r} "
                                  "must name a module (e.g. my_lab.nas_plugin), not an object in one")
        out.append(Plugin(f"{ep.name} (entry point of {dist})", module=ep.value))
    return tuple(out)


def load_plugins(plugins: Iterable[Plugin | dict] = (), *, installed: bool = True, key: str = "") -> None:
    """Import the installed plugins (unless ``installed=False``), then ``plugins`` (records or
    their dicts), each once per process. PluginError naming the plugin (and ``key[i]`` when a
    ``key`` is given) if one cannot be imported."""
    for plugin in installed_plugins() if installed else ():
        _load_one(plugin, "")
    for i, p in enumerate(plugins):
        _load_one(p if isinstance(p, Plugin) else Plugin.from_dict(p), f"{key}[{i}]" if key else "")


# module name -> the name of the plugin loaded as that module (as the user wrote it), for messages
_LOADED: dict[str, str] = {}


def plugin_of(module: str) -> Optional[str]:
    """The name (as the user wrote it: ``my_mixers.py``, ``my_lab.mixers``) of the loaded plugin
    that ``module`` is, or is a submodule of; None when no plugin was loaded as it."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        name = _LOADED.get(".".join(parts[:n]))
        if name is not None:
            return name
    return None


def _load_one(plugin: Plugin, key: str) -> None:
    name = plugin.module_name
    if name in sys.modules:
        _LOADED.setdefault(name, plugin.name)
        return
    registered, modules = registry_snapshot(), set(sys.modules)
    try:
        if plugin.module is not None:
            importlib.import_module(name)
        else:
            _exec_code(name, plugin)
    except BaseException as e:  # noqa: BLE001 - whatever it raised, its import is undone
        _undo_import(name, modules, registered)
        if isinstance(e, KeyboardInterrupt) and hasattr(e, "signum"):
            raise  # a stop signal arrived meanwhile (nas.engine.interrupts): not the plugin's doing
        raise _import_error(plugin, key, e) from None
    _LOADED[name] = plugin.name


def untrusted_plugins(plugins: Iterable[Plugin | dict]) -> list[Plugin]:
    """The records of ``plugins`` whose stored code :func:`load_plugins` would run although it is not
    the user's own: ``.py`` plugins not imported in this process yet whose stored path holds no file
    with the same text here. A module plugin is never one: it imports what is installed here (or
    fails to), and a file the user has, unchanged, is code they already have."""
    out = []
    for p in plugins:
        plugin = p if isinstance(p, Plugin) else Plugin.from_dict(p)
        if plugin.module is None and plugin.module_name not in sys.modules and not _same_file(plugin):
            out.append(plugin)
    return out


def _same_file(plugin: Plugin) -> bool:
    """True if the file at the plugin's stored path holds its stored text."""
    try:
        return Path(plugin.path).read_text(encoding="utf-8") == plugin.code
    except (OSError, UnicodeDecodeError):
        return False


def _undo_import(name: str, modules: set, registered) -> None:
    """Forget a plugin whose import failed: its module and submodules imported since (``modules``:
    the names in ``sys.modules`` before), and every registry entry it made (``registered``, a
    :func:`kernels.registry.snapshot` from before), so that importing it again, fixed, starts clean."""
    for m in set(sys.modules) - modules:
        if m == name or m.startswith(name + "."):
            del sys.modules[m]
    registered.restore()


def _import_error(plugin: Plugin, key: str, e: BaseException) -> PluginError:
    """The one-line PluginError for what ``plugin`` raised as it was imported. ``SystemExit`` and a
    ``KeyboardInterrupt`` it raised itself are failures like any other: a plugin does not end the process."""
    if isinstance(e, ModuleNotFoundError) and e.name and (plugin.module_name == e.name
                                                            or plugin.module_name.startswith(e.name + ".")):
        return PluginError(key, f"plugin {plugin.name!r}: no module named {e.name!r} (is it installed, or "
                                "on PYTHONPATH?)")
    why = " (a plugin must not end the process)" if isinstance(e, (SystemExit, KeyboardInterrupt)) else ""
    return PluginError(key, f"plugin {plugin.name!r} failed to import: {failure_reason(e)}{why}")


def load_space_plugins(raw, base_dir: Path | str) -> list[Plugin]:
    """Resolve and load the ``plugins:`` list of a space file's mapping ``raw`` (paths relative to
    ``base_dir``, the file's folder), after the installed plugins; PluginError at ``plugins[i]``."""
    load_plugins()
    if not isinstance(raw, dict):
        return []  # not a mapping: the space parser says so
    plugins = resolve_plugins(raw.get("plugins"), base_dir)
    load_plugins(plugins, installed=False, key="plugins")
    return plugins


class _StoredSource(importlib.abc.SourceLoader):
    """Loads a module from the text stored in a :class:`Plugin` (tracebacks show its lines)."""

    def __init__(self, path: str, code: str):
        self.path, self.code = path, code

    def get_filename(self, fullname: str) -> str:
        return self.path

    def get_data(self, path: str) -> bytes:
        return self.code.encode("utf-8")


def _exec_code(name: str, plugin: Plugin) -> None:
    loader = _StoredSource(plugin.path, plugin.code)
    spec = importlib.util.spec_from_loader(name, loader, origin=plugin.path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # classes defined in it must find their module (dataclasses, pickle)
    try:
        loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
