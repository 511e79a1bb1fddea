"""Proxy training over several seeds (``train.seeds``): each seed's quality metrics, and their mean,
spread and count.

One proxy run is a draw: the same architecture trained from another initialisation, on batches in
another order, lands elsewhere, and two architectures a few points apart may swap places. With ``train.seeds: k`` a trial runs its proxy training ``k`` times, seed
:func:`seed_for` ``(seed, j)`` for ``j = 0 .. k-1`` (``seed``, ``seed + 1000``, ...): run ``j``
initialises the model with ``torch.manual_seed`` of that seed and draws its batches with it. Every
run trains on the same task data (the task is generated once, from the search's seed), so the spread
is the training's, and every trial of a search sees the same data.

What depends on training is a quality metric (:func:`quality_metrics`: accuracy, the training losses,
the task's scores such as ``bits_per_byte``, user metrics registered ``at="trained"``). Over ``k >= 2``
runs each is stored as the mean, with ``<name>_std`` (sample standard deviation, ddof 1) and
``<name>_n`` (the count); one run stores the value alone, as before seeds existed. ``train_seconds``
is the runs' total. Costs are measured once (they do not depend on the weights' values), as are
the zero-cost proxies and the ``at="init"`` user metrics, on the first run's initialisation.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from typing import Mapping, Sequence

import torch

from evaluators.metrics import compute_user_metrics
from evaluators.train import TrainResult, train_proxy
from search_spaces import ArchSpec, build_model

__all__ = ["SEED_STRIDE", "TOTALS", "quality_metrics", "seed_for", "summarize", "train_seed"]

SEED_STRIDE = 1000  # seed j of a trial is the search's seed + SEED_STRIDE * j
TOTALS = ("train_seconds",)  # summed over the runs, not averaged: what the trial spent


def seed_for(seed: int, j: int) -> int:
    """The seed of proxy run ``j`` (0 = the first) of a search seeded with ``seed``."""
    return seed + SEED_STRIDE * j


def quality_metrics(result: TrainResult, model: torch.nn.Module, task, settings) -> dict:
    """What one proxy run scores: ``accuracy``, ``final_loss``, ``train_loss_sum``, ``train_seconds``,
    the task's scores (``task.scores``) and the user metrics of ``settings`` computed on the trained
    ``model`` (``at="trained"``, under ``settings.seed``)."""
    out = {"accuracy": result.accuracy, "final_loss": result.final_loss, "train_loss_sum": result.loss_sum,
           "train_seconds": result.seconds}
    out.update(task.scores(result.accuracy, result.test_loss))  # e.g. bits_per_byte (text)
    out.update(compute_user_metrics(settings.metrics, model, task, settings, at="trained"))
    return out


def train_seed(arch: ArchSpec, task, settings, j: int) -> dict:
    """Proxy run ``j`` of ``arch`` from scratch: the model built after ``torch.manual_seed`` of
    :func:`seed_for` ``(settings.seed, j)``, trained on batches drawn with that seed, scored by
    :func:`quality_metrics` (user metrics under that seed too). The same as the first run of a
    search seeded with that seed, on ``task``'s data."""
    seed = seed_for(settings.seed, j)
    torch.manual_seed(seed)
    model = build_model(arch, task.io)
    result = train_proxy(model, task, settings.train, seed=seed)
    return quality_metrics(result, model, task, replace(settings, seed=seed))


def summarize(runs: Sequence[Mapping[str, float]]) -> dict:
    """One metrics dict from the runs' (same keys, in the first run's order): the first run's
    values when there is one run; over several, each metric's mean followed by ``<name>_std``
    (sample standard deviation; NaN when a value is infinite) and ``<name>_n``, except
    :data:`TOTALS`, summed."""
    if len(runs) == 1:
        return dict(runs[0])
    out = {}
    for name in runs[0]:
        values = [float(r[name]) for r in runs]
        if name in TOTALS:
            out[name] = math.fsum(values)
            continue
        out[name] = math.fsum(values) / len(values)
        out[f"{name}_std"] = statistics.stdev(values) if all(map(math.isfinite, values)) else math.nan
        out[f"{name}_n"] = len(values)
    return out
