"""Spaces bound to their tasks, and read once for a search.

A space file names a task (``task: {name, params}``), and tasks live here, in the evaluators: the
task registry knows each task's I/O (tokens or channels, classes, length, causal or not). So a space
is parsed and checked in ``search_spaces`` (:func:`search_spaces.load_space`, which knows no task),
and bound to its task's I/O at this layer, the one above it, which hands down :func:`task_io` so one
call parses and binds::

    space = evaluators.load_space("tiny")          # a built-in name or a YAML path, bound to its task
    arch = search_spaces.sample(space, trial)

A search reads its space once, with :func:`read_space`: the space bound to its task with every
setting it declares checked (objectives and constraints against the metric registry; train, latency,
ladder and deployment profiles as :class:`~evaluators.evaluation.EvalSettings`), in one immutable
:class:`CheckedSpace` that every caller of the search is handed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from evaluators.confirmation import ConfirmConfig
from evaluators.tasks import task_io_for
from search_spaces.schema import SettingError
from search_spaces.space import CHANCE, Space, SpaceError
from search_spaces.space import load_space as parse_space_file
from search_spaces.task_io import TaskIO

if TYPE_CHECKING:
    from evaluators.evaluation import EvalSettings

__all__ = ["CheckedSpace", "bind_task", "check_mixers", "check_space", "load_space", "read_space", "resolve_floors",
           "task_io"]


def task_io(space: Space) -> TaskIO:
    """The I/O of the space's task, from the task registry (which checks the task's parameters);
    errors become :class:`~search_spaces.SpaceError` naming ``task``."""
    try:
        return task_io_for(space.task.name, space.task.params)
    except SettingError as e:
        raise SpaceError(space.source, e.path, e.message) from None
    except (KeyError, ValueError, TypeError) as e:
        msg = e.args[0] if e.args else str(e)
        raise SpaceError(space.source, "task", " ".join(str(msg).split())) from None


def bind_task(space: Space) -> Space:
    """``space`` bound to its task's I/O (checked against it; a bound copy) and its mixers checked against
    their contract (:mod:`search_spaces.contracts`, which builds them: torch)."""
    return check_mixers(space.bind(task_io(space)))


def check_mixers(space: Space) -> Space:
    """``space``, after every mixer it names is checked against the mixer contract
    (:mod:`search_spaces.contracts`, which builds them: torch, so only where models will be built)."""
    from search_spaces.contracts import check_space_mixers

    check_space_mixers(space)
    return space


def load_space(name_or_path: Union[str, Path]) -> Space:
    """A built-in space by name or a YAML file by path, checked and bound to its task; the plugins
    the file names are loaded first. :class:`~search_spaces.SpaceError` names the file and key."""
    return check_mixers(parse_space_file(str(name_or_path), io=task_io))


@dataclass(frozen=True)
class CheckedSpace:
    """A space file read once for a search: the space bound to its task, the evaluation
    settings it declares (train, latency, ladder, deployment profiles, the metrics to compute)
    and its confirmation settings, all checked. Immutable, so the planner, the study, the backends and resume share one."""

    space: Space  # bound to its task (space.io)
    settings: "EvalSettings"  # with seed 0; settings_for(seed) gives a search's
    # the space's floors resolved (resolve_floors): {metric: {"above": x}} or {"below": x}
    floors: dict = field(default_factory=dict)
    confirm: ConfirmConfig = ConfirmConfig()  # the confirm: section (nas confirm, and after a search with auto)

    def settings_for(self, seed: int) -> "EvalSettings":
        """The evaluation settings of a search seeded with ``seed`` (nothing is read again)."""
        return self.settings if seed == self.settings.seed else replace(self.settings, seed=seed)


def resolve_floors(space: Space) -> dict:
    """The floors of ``space`` (bound to its task; their metrics checked) as plain data a study
    stores and its readers apply without the task registry: ``{metric: {"above": x}}`` for a metric
    to maximize, ``{"below": x}`` for one to minimize (its natural direction), with ``chance``
    replaced by the task's level (:meth:`evaluators.tasks.Task.chance`). A trial must beat the
    floor strictly to count on a front."""
    from evaluators.metrics import DIRECTIONS
    from evaluators.tasks import get_task

    levels = get_task(space.task.name).chance(space.io)
    out = {}
    for name, value in space.floors.items():
        if value == CHANCE:
            if name not in levels:
                raise SpaceError(space.source, f"floors.{name}", f"task {space.task.name!r} declares no chance "
                                                                 f"level for {name} (it does for {sorted(levels)}); "
                                                                 "give a number")
            value = levels[name]
        out[name] = {"above" if DIRECTIONS[name] == "maximize" else "below": float(value)}
    return out


def check_space(space: Space) -> CheckedSpace:
    """``space``, bound to its task, checked beyond its own declarations: its objectives,
    constraints and floors against the metric registry (:func:`~evaluators.metrics.check_space_metrics`),
    its floors resolved (:func:`resolve_floors`), its train, latency, ladder and deploy settings by
    building its :class:`~evaluators.evaluation.EvalSettings`,
    its ``confirm:`` section as a :class:`~evaluators.confirmation.ConfirmConfig`.
    :class:`~search_spaces.SpaceError` names the file, the key and what is allowed."""
    from evaluators.evaluation import EvalSettings  # torch: what a search imports anyway
    from evaluators.metrics import check_space_metrics

    check_space_metrics(space)
    check_mixers(space)
    try:
        settings = EvalSettings.from_space(space)
        confirm = ConfirmConfig.from_dict(space.raw.get("confirm"))
    except SpaceError:
        raise
    except SettingError as e:
        raise SpaceError(space.source, e.path, e.message) from None
    return CheckedSpace(space, settings, resolve_floors(space), confirm)


def read_space(name_or_path: Union[str, Path], *, text: Optional[str] = None) -> CheckedSpace:
    """A space read and checked once for a search: a built-in name or a YAML path (its plugins
    loaded first), or ``text``, a study's stored copy of the file named after ``name_or_path``
    (the study's plugins loaded by the caller). Parsed and bound to its task in one call to
    ``search_spaces``, then checked here (:func:`check_space`). :class:`~search_spaces.SpaceError`
    names the file, the key and what is allowed."""
    return check_space(parse_space_file(str(name_or_path), io=task_io, text=text))
