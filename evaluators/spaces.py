"""Spaces bound to their tasks.

A space file names a task (``task: {name, params}``), and tasks live here, in the evaluators: the
task registry knows each task's I/O (tokens or channels, classes, length, causal or not). So a space
is parsed and checked in ``search_spaces`` (:func:`search_spaces.load_space`, which knows no task),
and bound to its task's I/O at this layer, the one above it::

    space = evaluators.load_space("tiny")          # a built-in name or a YAML path, bound to its task
    arch = search_spaces.sample(space, trial)
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

from evaluators.tasks import task_io_for
from search_spaces.schema import SettingError
from search_spaces.space import Space, SpaceError
from search_spaces.space import load_space as parse_space_file
from search_spaces.task_io import TaskIO

__all__ = ["bind_task", "load_space", "task_io"]


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
    """``space`` bound to its task's I/O (checked against it) and its mixers checked against their
    contract (:mod:`search_spaces.contracts`, which builds them: torch); the space, for chaining."""
    space.bind(task_io(space))
    from search_spaces.contracts import check_space_mixers  # torch: only where models will be built

    check_space_mixers(space)
    return space


def load_space(name_or_path: Union[str, Path]) -> Space:
    """A built-in space by name or a YAML file by path, checked and bound to its task; the plugins
    the file names are loaded first. :class:`~search_spaces.SpaceError` names the file and key."""
    return bind_task(parse_space_file(str(name_or_path)))
