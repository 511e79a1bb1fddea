"""Score one candidate: build it, count its costs, train the proxy, time it."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import torch

from evaluators.cost import count_params, decode_state_mb, flops_per_sample
from evaluators.decode import measure_decode
from evaluators.errors import OutOfMemory, TrialFailure
from evaluators.ladder import Ladder, check_filter, parse_ladder
from evaluators.latency import LatencyConfig, measure_latency, peak_memory_mb
from evaluators.metrics import DIRECTIONS, METRIC_REGISTRY, compute_user_metrics, filter_metrics
from evaluators.model_memory import EVAL_BATCH, check_profile, check_proxy
from evaluators.predictor import MemoryTable, Predictor, screen, with_prediction
from evaluators.profile_costs import measure_profile as measure_profile_here
from evaluators.profile_costs import profile_requests, task_profile
from evaluators.seeds import quality_metrics, summarize, train_seed
from evaluators.tasks import make_task
from evaluators.train import ProxyTraining, TrainConfig, TrainResult, evaluate_accuracy
from evaluators.zero_cost import ZERO_COST, compute_zero_cost, zero_cost_batch
from search_spaces import ArchSpec, build_model
from search_spaces.deploy_profiles import metric_name
from search_spaces.failures import first_line

__all__ = ["CAUSAL_METRICS", "METRICS", "ZERO_COST_METRICS", "EvalSettings", "check_fits_here", "evaluate", "static_costs",
           "timed_costs", "user_metrics_requested", "zero_cost_requested"]

# every metric name a space may use, with its natural direction (objectives, constraints, plots):
# a live view of the metric registry (evaluators/metrics.py), user metrics included
METRICS = DIRECTIONS
ZERO_COST_METRICS = tuple(ZERO_COST)  # the built-in proxies; ZERO_COST itself also holds those registered later
CAUSAL_METRICS = tuple(n for n in METRIC_REGISTRY if METRIC_REGISTRY[n].causal)  # only causal tasks have these


def user_metrics_requested(names) -> tuple[str, ...]:
    """The user metrics (registered with a function) among metric ``names``, each once, in order."""
    return tuple(n for n in dict.fromkeys(names) if n in METRIC_REGISTRY and METRIC_REGISTRY[n].fn is not None)


def zero_cost_requested(names) -> tuple[str, ...]:
    """The zero-cost proxies among metric ``names`` (objectives, constraints), in registry order."""
    names = set(names)
    return tuple(n for n in ZERO_COST if n in names)


@dataclass(frozen=True)
class EvalSettings:
    """What evaluating a candidate means for one search (read from the space file)."""

    task: str
    task_params: dict = field(default_factory=dict)
    train: TrainConfig = TrainConfig()
    latency: LatencyConfig = LatencyConfig()
    seed: int = 0
    zero_cost: tuple = ()  # zero-cost proxies to compute (names in ZERO_COST_METRICS)
    ladder: tuple = ()  # rungs (evaluators.ladder.Rung) tried before the full proxy training
    zero_cost_batch: int = 64  # mini-batch the data-dependent proxies see
    decode: bool = False  # time per-token decoding (decode_ms)
    metrics: tuple = ()  # user metrics to compute (registered with evaluators.metrics.register_metric)
    profiles: tuple = ()  # evaluators.profile_costs.ProfileRequest: costs to measure at deployment profiles

    @classmethod
    def from_space(cls, space, seed: int = 0) -> "EvalSettings":
        wanted = list(space.objectives) + list(space.constraints)
        train = TrainConfig.from_dict(space.train)
        ladder = parse_ladder(space.raw.get("ladder"), train_steps=train.steps,
                              zero_cost_names=tuple(ZERO_COST), filter_metrics=filter_metrics(space.profiles),
                              profiles=space.profiles, constraints=space.constraints)
        wanted += [r.metric for r in ladder if r.kind == "zero_cost"]
        wanted += [m for r in ladder if r.kind == "filter" for m in (*r.max, *r.min)]
        return cls(
            task=space.task.name,
            task_params=dict(space.task.params),
            train=train,
            latency=LatencyConfig.from_dict(space.latency),
            seed=seed,
            zero_cost=zero_cost_requested(wanted),
            decode="decode_ms" in wanted,
            ladder=ladder,
            metrics=user_metrics_requested(wanted),
            profiles=profile_requests(wanted, space.profiles),
        )


def evaluate(arch: ArchSpec, settings: EvalSettings, *, on_step=None, latency_lock=None,
             ladder_history: Optional[Mapping[str, Sequence[float]]] = None, measure_profile=None,
             predictor: Optional[Predictor] = None) -> dict:
    """All metrics of ``arch`` under ``settings``. Raises :class:`TrialFailure` (with the reason)
    when the candidate cannot be built, diverges, or runs out of memory; :class:`TooLarge` (one)
    before anything is built when its proxy training or a profile's model it measures would not
    fit in this machine's memory (:mod:`evaluators.model_memory`). ``latency_lock``, a
    context manager, is held while latency is timed (parallel backends serialize timing with it).
    With a ladder in ``settings``, ``ladder_history`` maps each rung name to the scores earlier
    candidates had there; a rung that stops the candidate raises :class:`LadderPruned`. The
    metrics then carry ``ladder_values`` (score per rung) and ``ladder_passed``. Costs at deployment
    profiles (``settings.profiles``) are measured by ``measure_profile(arch, io, request)`` (default:
    here, :func:`evaluators.profile_costs.measure_profile`; the Ray backend sends a CUDA profile to a
    GPU worker): before the ladder for the profiles its filter rungs bound, the others after
    training. ``predictor`` predicts latencies for ``predict`` rungs and ``measure: predict``
    profiles (default: one over a table in this process's memory). With ``settings.train.seeds``
    above 1 the proxy training runs that many times (:mod:`evaluators.seeds`) and the quality
    metrics are their mean, with ``<name>_std`` and ``<name>_n``; the ladder's train rungs rank the
    first run's partial training, ``on_step`` sees the first run only, and costs are measured once."""
    t0 = time.perf_counter()
    task = make_task(settings.task, settings.task_params, seed=settings.seed)
    if task.score_arch is not None:  # scored from the spec alone: no model (benchmarks/null_task.py)
        return {**task.score_arch(arch), "eval_seconds": time.perf_counter() - t0}
    try:
        metrics = _measure(arch, task, settings, Ladder(settings.ladder, ladder_history), on_step=on_step,
                           latency_lock=latency_lock, measure_profile=measure_profile, predictor=predictor)
    except TrialFailure:
        raise
    except (torch.OutOfMemoryError, MemoryError) as e:
        raise OutOfMemory(f"out of memory: {first_line(e)}") from e
    metrics["eval_seconds"] = time.perf_counter() - t0
    return metrics


def _measure(arch: ArchSpec, task, settings: EvalSettings, ladder: Ladder, *, on_step, latency_lock,
             measure_profile, predictor) -> dict:
    """Build ``arch``, count its costs, climb the ladder, train it, then time it (in that order)."""
    check_fits_here(arch, task, settings)
    torch.manual_seed(settings.seed)
    model = build_model(arch, task.io)
    metrics = _counted_costs(model, task, settings)
    predictor = predictor or Predictor(MemoryTable(), settings.latency, seed=settings.seed)
    run_profile = with_prediction(measure_profile or _measure_here(settings), predictor)
    early = _filtered_profiles(settings)
    for request in early:
        metrics.update(run_profile(arch, task.io, request))
    _screen(ladder, arch, model, task, settings, predictor, metrics)
    _zero_cost_once(model, task, settings, metrics)  # at initialisation, before training
    result = _train(model, task, settings, ladder, on_step)
    metrics.update(ladder.outcome())
    metrics.update(_quality(arch, model, task, settings, result))
    metrics.update(timed_costs(model, task.io, settings, latency_lock))
    for request in (r for r in settings.profiles if r not in early):
        metrics.update(run_profile(arch, task.io, request))
    return metrics


def check_fits_here(arch: ArchSpec, task, settings: EvalSettings) -> None:
    """:class:`TooLarge` when the proxy's training (its zero-cost step, evaluation and timing
    included) or the model of a profile it measures would not fit in this machine's memory."""
    n_eval = len(task.split(task.eval_split)[0])
    eval_batch = max(min(EVAL_BATCH, settings.train.eval_samples or n_eval, n_eval), settings.latency.batch_size)
    check_proxy(arch, task.io, settings.train, eval_batch=eval_batch,
                zero_cost_batch=settings.zero_cost_batch if settings.zero_cost else 0)
    for request in settings.profiles:
        check_profile(arch, task.io, request.profile)


def static_costs(model, io) -> dict:
    """Params, FLOPs and (causal tasks) decoding state: counted, not timed, and the same for any
    weights (``nas train`` counts them again on the trained model)."""
    metrics = {"params": count_params(model), "flops": flops_per_sample(model, io)}
    if io.causal:  # what generating the next token must keep in memory, at the task's length
        state = decode_state_mb(model, io.seq_len)
        if state is not None:
            metrics["state_mb"] = state
    return metrics


def _counted_costs(model, task, settings: EvalSettings) -> dict:
    """What the untrained model costs, counted without timing: :func:`static_costs` and the user
    metrics computed at initialisation."""
    metrics = static_costs(model, task.io)
    metrics.update(compute_user_metrics(settings.metrics, model, task, settings, at="init"))
    return metrics


def _screen(ladder: Ladder, arch: ArchSpec, model, task, settings: EvalSettings, predictor: Predictor,
            metrics: dict) -> None:
    """Judge the rungs before training, in order, adding what they compute to ``metrics``: bounds
    on counted costs (filter), predicted latencies (predict), a zero-cost score's rank (zero_cost)."""
    for rung in ladder.screens:
        if rung.kind == "filter":
            ladder.judge(rung, check_filter(rung, metrics))
        elif rung.kind == "predict":
            predicted, why = screen(rung, arch, task.io, task_profile(task.io, settings.latency), predictor)
            metrics.update(predicted)
            ladder.judge(rung, why, predicted)
        else:  # zero_cost
            _zero_cost_once(model, task, settings, metrics)
            score = float(metrics[rung.metric])
            ladder.rank(rung, score, f"{rung.metric} {score:.4g}")


def _train(model, task, settings: EvalSettings, ladder: Ladder, on_step) -> TrainResult:
    """The proxy training, paused at each train rung to rank the accuracy reached there."""
    with ProxyTraining(model, task, settings.train, seed=settings.seed, on_step=on_step) as run:
        for rung in ladder.checkpoints:
            run.train_to(rung.steps)
            acc = evaluate_accuracy(model, task, settings.train.eval_samples)
            ladder.rank(rung, acc, f"accuracy {acc:.4g} after {rung.steps} steps")
        return run.finish()


def _quality(arch: ArchSpec, model, task, settings: EvalSettings, first: TrainResult) -> dict:
    """The quality metrics over ``settings.train.seeds`` proxy runs (:mod:`evaluators.seeds`): the
    first, ``model`` trained to ``first`` (the run the ladder's train rungs ranked), then the others
    from scratch; their mean with ``_std`` and ``_n`` when there are several."""
    runs = [quality_metrics(first, model, task, settings)]
    runs += [train_seed(arch, task, settings, j) for j in range(1, settings.train.seeds)]
    return summarize(runs)


def timed_costs(model, io, settings: EvalSettings, latency_lock=None) -> dict:
    """Peak memory, latency and (if asked) decoding time of the trained model at the task's shape;
    timing holds ``latency_lock`` and moves the model to the latency device and dtype."""
    metrics = {}
    cpu = settings.latency.device == "cpu"
    if cpu:  # counted, not timed: no need to hold the device alone for it
        metrics["peak_mem_mb"] = peak_memory_mb(model, io, settings.latency)
    with latency_lock if latency_lock is not None else contextlib.nullcontext():
        metrics.update(measure_latency(model, io, settings.latency, memory=not cpu))
        if settings.decode:
            metrics.update(measure_decode(model, io, settings.latency))
    return metrics


def _filtered_profiles(settings: EvalSettings) -> tuple:
    """The profile requests whose metrics a ladder filter rung bounds (measured before it)."""
    bounded = {m for r in settings.ladder if r.kind == "filter" for m in (*r.max, *r.min)}
    return tuple(r for r in settings.profiles if any(metric_name(m, r.profile.name) in bounded for m in r.metrics))


def _measure_here(settings: EvalSettings):
    """The default profile runner: measure in this process (no lock: one process)."""

    def run(arch: ArchSpec, io, request) -> dict:
        return measure_profile_here(arch, io, request, settings.latency, seed=settings.seed)

    return run


def _zero_cost_once(model, task, settings: EvalSettings, metrics: dict) -> None:
    """Add the requested zero-cost proxies at initialisation to ``metrics`` unless they are there
    already; RNG state is left as it was."""
    if not settings.zero_cost or all(n in metrics for n in settings.zero_cost):
        return
    x, y = zero_cost_batch(task, settings.zero_cost_batch, seed=settings.seed)
    metrics.update(compute_zero_cost(model, task.io, x, y, settings.zero_cost, seed=settings.seed))
