"""Plugins for the commands that build models (see :mod:`search_spaces.plugins` for what a plugin is).

A study's plugin list is ``--plugin`` values followed by the space file's ``plugins:``, stored in
its :class:`~nas.engine.config.SearchConfig` (with each ``.py`` file's text) and loaded again by
``SearchConfig.checked_space`` in every process that builds its models: `nas resume`, `nas show`,
`nas status`, the Ray driver and its workers. Installed plugins (entry points) are loaded by every
process too, but not stored: they belong to the environment, like the engine itself.

A ``.py`` plugin's stored text is code: opening someone else's study or model folder must not run
it unasked. :func:`check_trusted` refuses (one line naming the files and their length, nothing run)
stored code that is not the user's own (:func:`search_spaces.plugins.untrusted_plugins`: no file
with the same text at the stored path, not imported yet) unless the caller passes ``trust_code``
(`--trust-code`, ``trust_code=True``), as Hugging Face runs a repository's code only with
``trust_remote_code=True``. The Ray workers load what their driver already accepted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Union

from nas.errors import UserError
from search_spaces.plugins import Plugin, PluginError, load_plugins, resolve_plugins, untrusted_plugins

__all__ = ["TRUST_HINT", "check_same_plugins", "check_trusted", "load_cli_plugins", "load_study_plugins",
           "study_plugins"]

TRUST_HINT = "--trust-code (trust_code=True in Python)"  # how a user allows stored code to run


def load_cli_plugins(names: Union[None, str, os.PathLike, Iterable[str]]) -> list[Plugin]:
    """Resolve ``--plugin`` values (``.py`` paths relative to the current directory; one name or
    path alone is a list of one) and load them after the installed plugins; UserError naming the
    plugin if one cannot be loaded."""
    if isinstance(names, (str, os.PathLike)):
        names = [names]
    if names is not None and (not isinstance(names, (list, tuple))
                              or not all(isinstance(n, (str, os.PathLike)) for n in names)):
        raise UserError(f"plugins: {names!r} is not allowed (a module name or .py path, or a list of them)")
    try:
        plugins = resolve_plugins([os.fspath(n) if isinstance(n, os.PathLike) else n for n in names or ()], Path.cwd(),
                                  key="--plugin")
        load_plugins(plugins)
    except PluginError as e:
        raise UserError(f"--plugin: {e.message}") from None
    return plugins


def check_trusted(plugins: Iterable[Plugin | dict], *, trust_code: bool, owner: str) -> None:
    """UserError, before anything runs, if ``plugins`` (stored by ``owner``: "study 'x'", a model
    folder) carry code that is not the user's own and ``trust_code`` is false; the line names each
    file with its number of lines and says how to allow it."""
    foreign = [] if trust_code else untrusted_plugins(plugins)
    if foreign:
        files = ", ".join(f"{p.name} ({len(p.code.splitlines())} lines)" for p in foreign)
        raise UserError(f"{owner} carries plugin code that is not on this machine: {files}; nothing was run. "
                        f"Run it only if you trust where it came from: {TRUST_HINT}")


def load_study_plugins(plugins: Iterable[dict], *, study: str, trust_code: bool = False) -> None:
    """Load a study's stored plugins (and the installed ones); UserError naming the one that fails,
    or the stored code that would run without ``trust_code`` (:func:`check_trusted`)."""
    plugins = list(plugins)
    check_trusted(plugins, trust_code=trust_code, owner=f"study {study!r}")
    try:
        load_plugins(plugins)
    except PluginError as e:
        raise UserError(f"study {study!r}: {e.message} (a plugin the study was made with)") from None


def study_plugins(cli: Iterable[Plugin], space) -> list[dict]:
    """The plugin list stored with a study: ``--plugin`` values, then the space file's, each once."""
    out: dict[str, dict] = {}
    for p in [*cli, *getattr(space, "plugins", ())]:
        out.setdefault(p.module_name, p.to_dict())
    return list(out.values())


def _ident(p: dict) -> str:
    return p.get("module") or Path(p["path"]).name


def check_same_plugins(stored, requested) -> None:
    """A study keeps the plugins it was made with: UserError if ``requested`` (a SearchConfig)
    names other plugins than ``stored``, or a ``.py`` plugin whose text changed since."""
    hint = f"use another --study name, or `nas resume --study {requested.study}` to continue with the stored plugins"
    was, now = ({_ident(p): p.get("code") for p in c.plugins} for c in (stored, requested))
    if sorted(was) != sorted(now):
        raise UserError(f"study {requested.study!r} in {requested.storage} was made with plugins "
                        f"{sorted(was) or 'none'}, this run loads {sorted(now) or 'none'}; {hint}")
    changed = sorted(name for name in now if now[name] != was[name])
    if changed:
        raise UserError(f"study {requested.study!r} in {requested.storage} was made with an earlier version of "
                        f"plugin {changed[0]} (the file changed since); {hint}")
