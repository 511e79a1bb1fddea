"""The task registry and base class."""

from __future__ import annotations

import inspect
import math

import torch

from kernels.registry import Registry
from search_spaces.schema import Check
from search_spaces.task_io import TaskIO

IGNORE_INDEX = -100


def _task_entry(name: str, cls: type) -> type:
    cls.name = name
    return cls


# the built-in tasks are the modules that evaluators/tasks/__init__.py imports
TASKS: Registry[type] = Registry("task", builtins=("evaluators.tasks",), entry=_task_entry)


class Task:
    """Base class. Subclasses set ``name`` via :func:`register_task`, implement ``io_for`` and
    ``_generate`` (returning a dict with a tensor pair per name in ``splits``).

    ``splits``: the splits the task has. A task with a held-out test split also has ``"val"`` and
    sets ``eval_split = "val"``: the proxy training of a search reports on ``eval_split``, and the
    test split stays untouched for the final evaluation of a chosen architecture.
    ``reports``: metrics beyond ``accuracy`` the task reports (names in ``evaluators.metrics``),
    computed by :meth:`scores` from the evaluated split's accuracy and mean cross-entropy.
    :meth:`chance` is what a model that learned nothing scores, the level a space's ``floors:``
    names as ``chance``.
    """

    name: str = ""
    splits: tuple[str, ...] = ("train", "test")
    eval_split: str = "test"
    reports: tuple[str, ...] = ()

    def __init__(self, seed: int = 0, **params):
        self.seed = seed
        self.params = params
        self.io = type(self).io_for(**params)
        self._data = None

    @classmethod
    def io_for(cls, **params) -> TaskIO:  # pragma: no cover - abstract
        raise NotImplementedError

    def _generate(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name not in self.splits:
            raise ValueError(f"task {self.name!r} has no split {name!r}; it has {list(self.splits)}")
        if self._data is None:
            self._data = self._generate()
        return self._data[name]

    # A task that scores an architecture from its spec alone sets this to a method
    # ``score_arch(arch) -> {metric: value}``: :func:`evaluators.evaluation.evaluate` then builds,
    # trains and times nothing (the null evaluation the engine's benchmarks run on,
    # benchmarks/null_task.py).
    score_arch = None

    def scores(self, accuracy: float, loss: float) -> dict:
        """The metrics in ``reports``, from the accuracy and the mean cross-entropy (nats per
        target) over an evaluated split."""
        return {}

    @classmethod
    def chance(cls, io: TaskIO) -> dict:
        """The chance level of each quality metric the task reports, for its I/O ``io``: what a
        uniform prediction over the ``io.num_classes`` classes scores (``accuracy`` 1 / classes,
        ``final_loss`` ln(classes) nats), known without data. A task that reports more metrics
        (``reports``) adds theirs; a majority-class guess can beat this level on a task whose
        classes are unbalanced, and a space that wants that bar gives the number itself."""
        return {"accuracy": 1.0 / io.num_classes, "final_loss": math.log(io.num_classes)}

    # accuracy over the positions (per-token) or samples that have a target
    @staticmethod
    def correct(logits: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
        pred = logits.argmax(-1)
        mask = y != IGNORE_INDEX
        return int(((pred == y) & mask).sum()), int(mask.sum())


def register_task(name: str):
    """Class decorator: register a :class:`Task` subclass as the task ``name``."""
    return TASKS.register(name)


def list_tasks() -> list[str]:
    return TASKS.names()


def get_task(name: str) -> type:
    return TASKS.get(name)


def _check_params(cls, params: dict) -> None:
    sig = inspect.signature(cls.io_for)
    allowed = [p for p in sig.parameters if p not in ("cls", "self")]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise TypeError(f"task {cls.name!r} has no parameter {unknown[0]!r}; it takes {allowed}")
    for k, v in params.items():  # the type is the default's (ranges: each task's io_for)
        default = sig.parameters[k].default
        if isinstance(default, (bool, int, float, str)):
            Check(float if isinstance(default, float) else type(default)).coerce(v, f"task.params.{k}")


def task_io_for(name: str, params: dict | None = None) -> TaskIO:
    """The I/O of task ``name`` with ``params``, without generating any data."""
    cls = get_task(name)
    params = dict(params or {})
    _check_params(cls, params)
    return cls.io_for(**params)


_CACHE: dict = {}


def make_task(name: str, params: dict | None = None, seed: int = 0) -> Task:
    """An instance of task ``name``; instances are cached per (name, params, seed) so repeated
    trials in one process generate the data once."""
    cls = get_task(name)
    params = dict(params or {})
    _check_params(cls, params)
    key = (name, tuple(sorted(params.items())), seed)
    if key not in _CACHE:
        _CACHE[key] = cls(seed=seed, **params)
    return _CACHE[key]
