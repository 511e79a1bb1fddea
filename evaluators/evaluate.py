"""Score one candidate: build it, count its costs, train the proxy, time it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from evaluators.cost import count_params, flops_per_sample
from evaluators.errors import OutOfMemory, TrialFailure
from evaluators.latency import LatencyConfig, measure_latency
from evaluators.tasks import make_task
from evaluators.train import TrainConfig, train_proxy
from search_spaces import ArchSpec, build_model

__all__ = ["METRICS", "EvalSettings", "evaluate"]

# every metric evaluate() returns, with its natural direction (for objectives and constraints)
METRICS = {
    "accuracy": "maximize",
    "latency_ms": "minimize",
    "params": "minimize",
    "flops": "minimize",
    "train_loss_sum": "minimize",
    "final_loss": "minimize",
}


@dataclass(frozen=True)
class EvalSettings:
    """What evaluating a candidate means for one search (read from the space file)."""

    task: str
    task_params: dict = field(default_factory=dict)
    train: TrainConfig = TrainConfig()
    latency: LatencyConfig = LatencyConfig()
    seed: int = 0

    @classmethod
    def from_space(cls, space, seed: int = 0) -> "EvalSettings":
        return cls(
            task=space.task["name"],
            task_params=dict(space.task.get("params", {})),
            train=TrainConfig.from_dict(space.train),
            latency=LatencyConfig.from_dict(space.latency),
            seed=seed,
        )


def evaluate(arch: ArchSpec, settings: EvalSettings, *, on_step=None) -> dict:
    """All metrics of ``arch`` under ``settings``. Raises :class:`TrialFailure` (with the reason)
    when the candidate cannot be built, diverges, or runs out of memory."""
    t0 = time.perf_counter()
    task = make_task(settings.task, settings.task_params, seed=settings.seed)
    try:
        torch.manual_seed(settings.seed)
        model = build_model(arch, task.io)
        metrics = {"params": count_params(model), "flops": flops_per_sample(model, task.io)}
        result = train_proxy(model, task, settings.train, seed=settings.seed, on_step=on_step)
        metrics.update(
            accuracy=result.accuracy,
            final_loss=result.final_loss,
            train_loss_sum=result.loss_sum,
            train_seconds=result.seconds,
        )
        metrics.update(measure_latency(model, task.io, settings.latency))
    except TrialFailure:
        raise
    except (torch.OutOfMemoryError, MemoryError) as e:
        raise OutOfMemory(f"out of memory: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    metrics["eval_seconds"] = time.perf_counter() - t0
    return metrics
