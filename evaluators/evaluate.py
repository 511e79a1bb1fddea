"""Score one candidate: build it, count its costs, train the proxy, time it."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import torch

from evaluators.cost import count_params, flops_per_sample
from evaluators.errors import OutOfMemory, TrialFailure
from evaluators.latency import LatencyConfig, measure_latency
from evaluators.tasks import make_task
from evaluators.train import TrainConfig, train_proxy
from evaluators.zero_cost import ZERO_COST, compute_zero_cost, zero_cost_batch
from search_spaces import ArchSpec, build_model

__all__ = ["METRICS", "ZERO_COST_METRICS", "EvalSettings", "evaluate", "zero_cost_requested"]

# every metric evaluate() returns, with its natural direction (for objectives and constraints).
# train_loss_sum: the sum of the training losses over the proxy run (a training-speed estimate,
# Ru et al. 2021 "Speedy Performance Estimation"): lower means the candidate learned faster; it is
# recorded for every trial and usable as an objective or constraint like any other metric.
METRICS = {
    "accuracy": "maximize",
    "latency_ms": "minimize",
    "params": "minimize",
    "flops": "minimize",
    "train_loss_sum": "minimize",
    "final_loss": "minimize",
    # zero-cost proxies (evaluators/zero_cost.py): computed at initialisation, only when a search
    # names them (objective or constraint), so default searches pay nothing for them
    "synflow": "maximize",
    "naswot": "maximize",
    "jacob_cov": "maximize",
    "snip": "maximize",
    "grad_norm": "maximize",
}
ZERO_COST_METRICS = tuple(ZERO_COST)


def zero_cost_requested(names) -> tuple[str, ...]:
    """The zero-cost proxies among metric ``names`` (objectives, constraints), in registry order."""
    names = set(names)
    return tuple(n for n in ZERO_COST_METRICS if n in names)


@dataclass(frozen=True)
class EvalSettings:
    """What evaluating a candidate means for one search (read from the space file)."""

    task: str
    task_params: dict = field(default_factory=dict)
    train: TrainConfig = TrainConfig()
    latency: LatencyConfig = LatencyConfig()
    seed: int = 0
    zero_cost: tuple = ()  # zero-cost proxies to compute (names in ZERO_COST_METRICS)
    zero_cost_batch: int = 64  # mini-batch the data-dependent proxies see

    @classmethod
    def from_space(cls, space, seed: int = 0) -> "EvalSettings":
        wanted = list(space.objectives) + list(space.constraints)
        return cls(
            task=space.task["name"],
            task_params=dict(space.task.get("params", {})),
            train=TrainConfig.from_dict(space.train),
            latency=LatencyConfig.from_dict(space.latency),
            seed=seed,
            zero_cost=zero_cost_requested(wanted),
        )


def evaluate(arch: ArchSpec, settings: EvalSettings, *, on_step=None, latency_lock=None) -> dict:
    """All metrics of ``arch`` under ``settings``. Raises :class:`TrialFailure` (with the reason)
    when the candidate cannot be built, diverges, or runs out of memory. ``latency_lock``, a
    context manager, is held while latency is timed (parallel backends serialize timing with it)."""
    t0 = time.perf_counter()
    task = make_task(settings.task, settings.task_params, seed=settings.seed)
    try:
        torch.manual_seed(settings.seed)
        model = build_model(arch, task.io)
        metrics = {"params": count_params(model), "flops": flops_per_sample(model, task.io)}
        if settings.zero_cost:  # at initialisation, before training; RNG state is left as it was
            x, y = zero_cost_batch(task, settings.zero_cost_batch, seed=settings.seed)
            metrics.update(compute_zero_cost(model, task.io, x, y, settings.zero_cost, seed=settings.seed))
        result = train_proxy(model, task, settings.train, seed=settings.seed, on_step=on_step)
        metrics.update(
            accuracy=result.accuracy,
            final_loss=result.final_loss,
            train_loss_sum=result.loss_sum,
            train_seconds=result.seconds,
        )
        with latency_lock if latency_lock is not None else contextlib.nullcontext():
            metrics.update(measure_latency(model, task.io, settings.latency))
    except TrialFailure:
        raise
    except (torch.OutOfMemoryError, MemoryError) as e:
        raise OutOfMemory(f"out of memory: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    metrics["eval_seconds"] = time.perf_counter() - t0
    return metrics
