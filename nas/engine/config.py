"""SearchConfig: everything a search needs, stored in the study so `nas resume` needs nothing else."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from nas.errors import UserError
from search_spaces.schema import SettingError, setting
from search_spaces.space import MAX_TRIALS

__all__ = ["SearchConfig", "SAMPLERS", "STORAGE_ENV", "check_runs_here", "check_study_name", "default_storage",
           "load_space_checked", "resolve_storage"]

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

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> "SearchConfig":
        return cls(**json.loads(s))

    def load_space(self):
        """The space parsed from the stored YAML text (validated and bound to its task), after
        loading the study's plugins; UserError naming a plugin that cannot be loaded."""
        from nas.engine.study_plugins import load_study_plugins

        load_study_plugins(self.plugins, study=self.study)
        return load_space_checked(self.space, text=self.space_yaml)

    def task(self):
        """The space's task (a :class:`~search_spaces.space.TaskRef`: name and parameters) as stored,
        read without loading the space: no plugin, no task registry, no torch."""
        import yaml

        from search_spaces.space import parse_task

        return parse_task((yaml.safe_load(self.space_yaml) or {}).get("task"))

    def eval_settings(self):
        from evaluators.evaluation import EvalSettings  # torch: only where models are evaluated

        return EvalSettings.from_space(self.load_space(), seed=self.seed)


def load_space_checked(name_or_path: str, text: Optional[str] = None):
    """Load a space (from ``text`` if given: a study's stored YAML) and check every setting it
    declares, arch, task, objectives, constraints, train, latency and ladder, before anything is
    written; the first one that is wrong is a UserError naming the file, the key, the value and
    what is allowed."""
    from evaluators.evaluation import EvalSettings
    from evaluators.spaces import bind_task, load_space
    from search_spaces.space import SpaceError, parse_space_text

    source = Path(name_or_path).name
    try:
        if text is None:
            space = load_space(name_or_path)
        else:
            space = bind_task(parse_space_text(text, source=source, default_name=Path(name_or_path).stem))
        source = space.source
        _check_metrics(space)
        EvalSettings.from_space(space)
    except SpaceError as e:
        raise UserError(str(e)) from None
    except SettingError as e:
        raise UserError(f"{source}: {e}") from None
    return space


def check_runs_here(space, backend: str = "local") -> None:
    """UserError if no model of ``space`` can run on this machine: a width, depth or batch size
    too large for its memory, or latency on a CUDA device it lacks (``evaluators.fit``). With the
    ray backend a deployment profile's device is looked for in the Ray cluster when it starts
    (``nas.engine.backends.placement``), not here."""
    from evaluators.evaluation import EvalSettings
    from evaluators.fit import available_memory, check_fits

    settings = EvalSettings.from_space(space)
    try:
        check_fits(space, settings.train, settings.latency, available_memory(), profile_devices=backend != "ray")
    except SettingError as e:
        raise UserError(f"{space.source}: {e}") from None


def _check_metrics(space) -> None:
    """Objectives and constraints name metrics that ``evaluate`` returns for this task."""
    from evaluators.metrics import resolve_metric
    from evaluators.tasks import get_task, list_tasks
    from kernels.registry import UnknownName
    from search_spaces.space import SpaceError

    for name in list(space.objectives) + list(space.constraints):
        where = f"{'objectives' if name in space.objectives else 'constraints'}.{name}"
        try:
            metric = resolve_metric(name, space.profiles)  # built-in, a plugin's, or <cost>@<profile>
        except UnknownName as e:
            raise SpaceError(space.source, where, str(e)) from None
        if metric.causal and not space.io.causal:
            raise SpaceError(space.source, where, f"only causal tasks decode token by token; "
                                                  f"task {space.task.name!r} is not causal")
        if metric.by_task and name not in get_task(space.task.name).reports:
            by = [t for t in list_tasks() if name in get_task(t).reports]
            raise SpaceError(space.source, where, f"task {space.task.name!r} does not report {name} "
                                                  f"(tasks that do: {by})")
