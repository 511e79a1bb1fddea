"""SearchConfig: everything a search needs, stored in the study so `nas resume` needs nothing else."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Optional

from nas.errors import UserError
from search_spaces.schema import SettingError, setting
from search_spaces.space import MAX_TRIALS

__all__ = ["SearchConfig", "SAMPLERS", "STORAGE_ENV", "check_runs_here", "check_study_name", "default_storage",
           "load_checked", "load_space_checked", "resolve_storage"]

SAMPLERS = ("tpe", "nsga2", "random", "gp")  # the first is the default (benchmarks/search_efficiency.py)


STUDY_NAME_MAX = 128  # characters


def check_study_name(name: str, *, file_name: bool) -> str:
    """``name`` if it can name a study: 1 to 128 characters, none of them control characters. With
    ``file_name`` (it also names the default storage, results/<name>.db) no path separator and no
    leading '.', so the file stays in results/. UserError (naming --study) otherwise."""
    allowed = f"1 to {STUDY_NAME_MAX} characters, no control characters"
    if file_name:
        allowed += ", no '/' or '\\', not starting with '.' (it names the file results/<study>.db)"
    bad = (not isinstance(name, str) or not 0 < len(name) <= STUDY_NAME_MAX
           or any(ord(c) < 32 or ord(c) == 127 for c in name)
           or file_name and (name.startswith(".") or "/" in name or "\\" in name))
    if bad:
        raise UserError(f"--study: {name!r} is not a valid study name ({allowed})")
    return name


STORAGE_ENV = "NAS_STORAGE"  # the storage URL every command uses when --storage is not given


def default_storage(study: str) -> str:
    """The storage of ``study`` when none is named: ``$NAS_STORAGE`` when set (and not empty), else
    ``sqlite:///results/<study>.db`` (UserError for a name that cannot be a file name there)."""
    env = os.environ.get(STORAGE_ENV)
    if env:
        return env
    return f"sqlite:///results/{check_study_name(study, file_name=True)}.db"


def resolve_storage(study: str, storage: Optional[str] = None) -> str:
    """The storage URL a command uses for ``study``: ``storage`` (``--storage``), else
    ``$NAS_STORAGE``, else ``sqlite:///results/<study>.db``. UserError (naming --study) for a
    study name that cannot name a study, or the default file."""
    check_study_name(study, file_name=storage is None and not os.environ.get(STORAGE_ENV))
    return storage or default_storage(study)


@dataclass
class SearchConfig:
    """A search: the space (its YAML text is kept, so the study does not depend on the file),
    the budget, the sampler and where trials are stored."""

    space: str  # name of a built-in space or the path it was loaded from
    space_yaml: str  # the space file's text at creation time
    study: str
    storage: str
    trials: int = setting(kind=int, low=1, high=MAX_TRIALS, doc="total finished trials the study should reach")
    sampler: str = setting(SAMPLERS[0], choices=SAMPLERS)
    seed: int = 0
    backend: str = "local"
    workers: int = setting(1, low=1, doc="parallel workers (ray backend)")
    timeout: Optional[float] = setting(None, kind=float, above=0, optional=True,
                                       doc="stop starting new trials after this many seconds")
    heartbeat_interval: int = setting(5, low=1, doc="seconds between trial heartbeats")
    grace_period: int = 20
    max_retry: int = 1
    extra: dict = field(default_factory=dict)
    # plugins the space needs (search_spaces.plugins.Plugin.to_dict(): a module name, or a .py
    # file's path and text), loaded by every process that builds models, Ray workers included
    plugins: list = field(default_factory=list)
    # the space's floors as its readers apply them, with no task registry (evaluators.spaces.resolve_floors:
    # {metric: {"above": x} | {"below": x}}), set from the checked space (use_space); {} in older studies
    floors: dict = field(default_factory=dict)
    _checked = None  # not a field (not stored): the space read for this config (checked_space)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> "SearchConfig":
        return cls(**json.loads(s))

    def checked_space(self, *, trust_code: bool = False):
        """The stored space (an :class:`evaluators.spaces.CheckedSpace`: bound to its task, every
        setting checked), read once for this config, after loading the study's plugins; or the one
        :meth:`use_space` handed over. UserError naming a plugin that cannot be loaded, or the space
        file's key that is wrong. ``trust_code``: run the study's stored plugin code that is not
        the user's own (nas.engine.study_plugins); else such code is refused."""
        if self._checked is None:
            from nas.engine.study_plugins import load_study_plugins

            load_study_plugins(self.plugins, study=self.study, trust_code=trust_code)
            self._checked = load_checked(self.space, text=self.space_yaml)
        return self._checked

    def use_space(self, checked) -> None:
        """Use ``checked`` (read from this config's ``space_yaml``, its plugins loaded) as the
        config's space, so nothing reads the text again; its resolved floors are the config's."""
        if checked.space.text != self.space_yaml:
            raise ValueError(f"study {self.study!r}: the space given is not the one its config stores")
        self._checked = checked
        self.floors = dict(checked.floors)

    def load_space(self, *, trust_code: bool = False):
        """The space (a ``search_spaces.Space`` bound to its task) of :meth:`checked_space`."""
        return self.checked_space(trust_code=trust_code).space

    def task(self):
        """The space's task (a :class:`~search_spaces.space.TaskRef`: name and parameters) as stored,
        read without loading the space: no plugin, no task registry, no torch."""
        import yaml

        from search_spaces.space import parse_task

        return parse_task((yaml.safe_load(self.space_yaml) or {}).get("task"))

    def eval_settings(self):
        """The evaluation settings of :meth:`checked_space`, with this search's seed."""
        return self.checked_space().settings_for(self.seed)


def load_checked(name_or_path: str, text: Optional[str] = None):
    """:func:`evaluators.spaces.read_space` (the space, from ``text`` if given: a study's stored
    YAML, bound to its task with every setting it declares checked) before anything is written;
    the first thing that is wrong is a UserError naming the file, the key, the value and what is
    allowed."""
    from evaluators.spaces import read_space
    from search_spaces.space import SpaceError

    try:
        return read_space(name_or_path, text=text)
    except SpaceError as e:
        raise UserError(str(e)) from None


def load_space_checked(name_or_path: str, text: Optional[str] = None):
    """The space of :func:`load_checked` (a ``search_spaces.Space`` bound to its task)."""
    return load_checked(name_or_path, text).space


def check_runs_here(checked, backend: str = "local") -> None:
    """UserError if no model of ``checked`` (an :class:`evaluators.spaces.CheckedSpace`) can run on
    this machine: a width, depth or batch size too large for its memory, or latency on a CUDA
    device it lacks (``evaluators.fit``). With the ray backend a deployment profile's device is
    looked for in the Ray cluster when it starts (``nas.engine.backends.placement``), not here."""
    from evaluators.fit import available_memory, check_fits

    settings = checked.settings
    try:
        check_fits(checked.space, settings.train, settings.latency, available_memory(),
                   profile_devices=backend != "ray")
    except SettingError as e:
        raise UserError(f"{checked.space.source}: {e}") from None
