"""The metric registry: every name a space may use as an objective, a constraint or a ladder bound.

Built-in metrics are computed by :func:`evaluators.evaluation.evaluate` itself (``fn`` is None);
a user metric is a function registered with :func:`register_metric`::

    from evaluators.metrics import register_metric

    @register_metric("mixer_params", "minimize", at="init")
    def mixer_params(model, task, settings) -> float:
        return sum(p.numel() for s in model.stages for b in s for p in b.mixer.parameters())

``fn(model, task, settings)`` gets the model, the task (``task.io``, ``task.split("test")``) and
the :class:`~evaluators.evaluation.EvalSettings` of the search, and returns a number. ``at="trained"``
(the default) runs it after the proxy training, on the trained model in eval mode; ``at="init"``
runs it on the freshly initialised model before training, which also makes the metric usable as a
bound of a ``filter`` rung of the proxy ladder. A user metric is computed only in searches that
name it; it runs under a forked RNG seeded with the search's seed, so it changes nothing that
follows. With ``train.seeds`` above 1 a trained metric is computed after each proxy run (under that
run's seed, ``settings.seed``) and stored as their mean with ``<name>_std`` and ``<name>_n``. Gradients are enabled (use ``torch.no_grad()`` inside ``fn`` if none are needed). If
``fn`` raises or returns something that is not a number (or NaN), the trial fails with that reason.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Mapping, Optional

import torch

from evaluators.errors import TrialFailure
from kernels.registry import Registry, UnknownName
from search_spaces.failures import failure_reason

__all__ = ["DIRECTIONS", "METRIC_REGISTRY", "Metric", "check_space_metrics", "compute_user_metrics", "filter_metrics",
           "register_metric", "resolve_metric"]

DIRECTION_NAMES = ("maximize", "minimize")
STAGES = ("init", "trained")


@dataclass(frozen=True)
class Metric:
    """A metric: its natural ``direction``; ``fn`` for a user metric (None: computed by evaluate);
    ``at``: known at initialisation or after training; ``causal``: only causal tasks have it;
    ``zero_cost``: a zero-cost proxy (computed only when named); ``by_task``: reported only by
    the tasks that list it in ``Task.reports`` (e.g. ``bits_per_byte`` by ``text``);
    ``per_profile``: a cost that also exists at each deployment profile as ``<name>@<profile>``
    (``latency_ms@long``, see ``evaluators.profile_costs``)."""

    name: str
    direction: str
    fn: Optional[Callable] = None
    at: str = "trained"
    causal: bool = False
    zero_cost: bool = False
    by_task: bool = False
    per_profile: bool = False
    doc: str = ""

    @property
    def filterable(self) -> bool:
        """Usable as a bound of a ladder ``filter`` rung (known before training, for every task)."""
        return self.at == "init" and not self.zero_cost and not self.causal


# the zero-cost proxies register their metrics as they are registered (evaluators.zero_cost.register_zero_cost)
METRIC_REGISTRY: Registry[Metric] = Registry("metric", builtins=("evaluators.zero_cost",))


def _builtin(name: str, direction: str, doc: str, *, at: str = "trained", causal: bool = False,
             by_task: bool = False, per_profile: bool = False) -> None:
    METRIC_REGISTRY.add(name, Metric(name, direction, at=at, causal=causal, by_task=by_task,
                                     per_profile=per_profile, doc=doc))


_builtin("params", "minimize", "trainable parameters", at="init", per_profile=True)
_builtin("flops", "minimize", "multiply-accumulates x 2 of one forward pass per sample", at="init", per_profile=True)
_builtin("state_mb", "minimize", "MiB a decoder keeps per sequence at the task's length", at="init", causal=True,
         per_profile=True)
_builtin("accuracy", "maximize", "accuracy after the proxy training, on the task's evaluation split (test, or "
                                 "validation where the task holds its test split out)")
_builtin("train_loss_sum", "minimize", "sum of the training losses over the proxy run (a training-speed "
                                       "estimate, Ru et al. 2021)")
_builtin("final_loss", "minimize", "training loss at the end of the proxy run")
_builtin("latency_ms", "minimize", "median forward latency at the latency shape", per_profile=True)
_builtin("peak_mem_mb", "minimize", "MiB one forward at the latency shape allocates", per_profile=True)
_builtin("bits_per_byte", "minimize", "mean cross-entropy of the next byte in bits (nats / ln 2) on the "
                                      "evaluation split after the proxy training (byte-level language models)",
         by_task=True)
_builtin("decode_ms", "minimize", "time to decode one more token at the task's length", causal=True,
         per_profile=True)


def register_metric(name: str, direction: str, fn: Optional[Callable] = None, *, at: str = "trained",
                    doc: str = ""):
    """Register ``fn(model, task, settings) -> float`` as the metric ``name`` with its natural
    ``direction`` (``maximize`` or ``minimize``). Without ``fn``, a decorator. See the module
    docstring for ``at``. Returns ``fn``."""
    if direction not in DIRECTION_NAMES:
        raise ValueError(f"metric {name!r}: direction {direction!r} is not one of {list(DIRECTION_NAMES)}")
    if at not in STAGES:
        raise ValueError(f"metric {name!r}: at={at!r} is not one of {list(STAGES)}")

    def deco(f: Callable) -> Callable:
        if not callable(f):
            raise TypeError(f"metric {name!r}: fn must be callable, got {f!r}")
        METRIC_REGISTRY.add(name, Metric(name, direction, fn=f, at=at, doc=doc or _first_line(f)))
        return f

    return deco if fn is None else deco(fn)


def _first_line(f: Callable) -> str:
    return ((getattr(f, "__doc__", None) or "").strip().splitlines() or [""])[0]


def resolve_metric(name: str, profiles: Iterable[str] = ()) -> Metric:
    """The :class:`Metric` a space names: a registered name, or ``<cost>@<profile>`` for a cost
    measured per profile (``per_profile``) and a profile among ``profiles`` (the space's
    ``deploy:`` names). A profile metric does not depend on training (random weights at the
    profile), so it is known at initialisation. :class:`~kernels.registry.UnknownName`
    (a KeyError) for an unknown metric or profile, with one line saying what is allowed."""
    base, at, profile = name.partition("@")
    metric = METRIC_REGISTRY.get(base)
    if not at:
        return metric
    if not metric.per_profile:
        raise UnknownName("metric", name, [f"{n}@{profile}" for n in METRIC_REGISTRY if METRIC_REGISTRY[n].per_profile])
    if profile not in list(profiles):
        raise UnknownName("profile", profile, list(profiles))
    return replace(metric, name=name, at="init")


def check_space_metrics(space) -> None:
    """The objectives, constraints and floors of ``space`` (bound to its task) name metrics that
    :func:`~evaluators.evaluation.evaluate` returns for its task: registered (or a cost at one of
    its profiles), causal ones on a causal task only, task-reported ones on a task that reports
    them. :class:`~search_spaces.SpaceError` names the key otherwise."""
    from evaluators.tasks import get_task, list_tasks
    from search_spaces.space import SpaceError

    named = [(f"objectives.{n}", n) for n in space.objectives] + [(f"constraints.{n}", n) for n in space.constraints]
    for where, name in named + [(f"floors.{n}", n) for n in space.floors]:
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


class _Directions(Mapping):
    """Metric name -> natural direction, read live from the registry (user metrics included);
    ``<cost>@<profile>`` has its cost's direction."""

    def __getitem__(self, name: str) -> str:
        base, at, _ = name.partition("@")
        metric = METRIC_REGISTRY.get(base)
        if at and not metric.per_profile:
            raise KeyError(name)
        return metric.direction

    def __iter__(self):
        return iter(METRIC_REGISTRY)

    def __len__(self) -> int:
        return len(METRIC_REGISTRY)

    def __repr__(self) -> str:
        return repr(dict(self))


DIRECTIONS: Mapping[str, str] = _Directions()


def filter_metrics(profiles: Iterable[str] = ()) -> tuple[str, ...]:
    """Metrics a ladder ``filter`` rung may bound: the built-in costs known before training, user
    metrics registered with ``at="init"``, and each cost of each of ``profiles`` (profile
    metrics are measured on random weights, before training)."""
    names = [n for n in METRIC_REGISTRY if METRIC_REGISTRY[n].filterable]
    costs = [n for n in METRIC_REGISTRY if METRIC_REGISTRY[n].per_profile and not METRIC_REGISTRY[n].causal]
    return tuple(names + [f"{n}@{p}" for p in profiles for n in costs])


def compute_user_metrics(names: Iterable[str], model: torch.nn.Module, task, settings, *, at: str) -> dict:
    """The values of the user metrics among ``names`` that run ``at`` this point. A metric that
    raises or returns something other than a number is a :class:`TrialFailure` naming it."""
    out = {}
    for name in names:
        metric = METRIC_REGISTRY.get(name)
        if metric.fn is None or metric.at != at:
            continue
        was_training = model.training
        if at == "trained":
            model.eval()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(settings.seed)
                value = metric.fn(model, task, settings)
        except TrialFailure:
            raise
        except Exception as e:
            raise TrialFailure(f"metric {name} failed: {failure_reason(e)}") from e
        finally:
            model.train(was_training)
        out[name] = _number(name, value)
    return out


def _number(name: str, value) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TrialFailure(f"metric {name} returned {value!r}, not a number")
    value = float(value)
    if math.isnan(value):
        raise TrialFailure(f"metric {name} returned NaN")
    return value
