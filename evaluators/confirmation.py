"""Confirming candidates (``nas confirm``): more seeds for their quality, one paired timing for their costs.

A search evaluates each candidate once: one seed of proxy training, one timing taken whenever the
candidate's turn came. Both are noisy (another seed moves the accuracy, the same model timed minutes
apart differs by tens of percent), so a front built from them is partly a draw. Confirmation
re-evaluates the candidates that matter:

- quality: each candidate trained again with more seeds (:func:`extra_seeds`: another initialisation,
  data draw and order each), through the search's own :func:`evaluators.evaluation.evaluate`
  (:func:`seed_settings`); every quality metric becomes the mean over seeds with its sample standard
  deviation and count (:func:`combine`: ``accuracy``, ``accuracy_std``, ``accuracy_n``);
- cost: every candidate's model built at each timed profile and timed against the others in one
  :func:`evaluators.latency.paired_timing` pass (:func:`paired_costs`): interleaved rounds, so
  whatever the machine does meanwhile falls on all of them alike; medians, their 95% intervals and
  each candidate's ratio to the fastest.

What it is set to do is the space file's ``confirm:`` section (:class:`ConfirmConfig`).
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

from search_spaces.deploy_profiles import Profile, metric_name, split_metric
from search_spaces.schema import from_mapping, setting

if TYPE_CHECKING:
    from evaluators.evaluation import EvalSettings
    from search_spaces.arch import ArchSpec
    from search_spaces.task_io import TaskIO

__all__ = ["SEED_LIMIT", "SEED_STEP", "TIMED", "ConfirmConfig", "combine", "extra_seeds", "is_quality", "paired_costs",
           "seed_settings", "timed_profiles"]

SEED_STEP = 1000  # seed k of a candidate is the search's seed + SEED_STEP * k
SEED_LIMIT = 2**32  # seeds wrap around here (numpy's legacy seeding takes [0, 2**32 - 1])
PASS_STRIDE = 100  # confirmation pass p >= 2 trains seeds k = PASS_STRIDE * (p - 1), ...: none of an earlier pass's
TIMED = ("latency_ms", "decode_ms")  # the costs a confirmation times again (the others are counted: exact)


@dataclass(frozen=True)
class ConfirmConfig:
    """The ``confirm:`` section of a space file, declared: each setting's type and range."""

    seeds: int = setting(3, low=1, doc="seeds per candidate in all, the search's own included")
    p_min: float = setting(0.05, above=0, high=1, doc="candidates: the front and every trial whose p_front is "
                                                      "at least this")
    rounds: int = setting(30, low=1, doc="interleaved rounds of the paired timing (a sample per candidate each)")
    auto: bool = setting(False, doc="confirm when a search ends")

    @classmethod
    def from_dict(cls, d) -> "ConfirmConfig":
        """From a space file's ``confirm:`` mapping; :class:`SettingError` names ``confirm.<key>``."""
        return from_mapping(cls, d, "confirm")


def extra_seeds(seed: int, *, have: int, want: int, pass_number: int = 1) -> list[int]:
    """The seeds a candidate is trained with in confirmation pass ``pass_number``: in the first,
    ``seed + 1000 k`` for k = ``have`` .. ``want`` - 1 (``have``: the seeds its stored values
    already average, k = 0 .. ``have`` - 1, the search's own seed first); in a later pass ``want``
    seeds none of the earlier passes used (k from 100 (p - 1) on), so a second confirmation is
    independent of the first. Modulo 2**32."""
    first = have if pass_number == 1 else PASS_STRIDE * (pass_number - 1)
    last = want if pass_number == 1 else first + want
    return [(seed + SEED_STEP * k) % SEED_LIMIT for k in range(first, last)]


def seed_settings(settings: "EvalSettings", seed: int) -> "EvalSettings":
    """The evaluation of an extra seed: the search's ``settings`` at ``seed``, without the ladder
    (the candidate has passed it; a rung must not stop it now) and the timings (one quick sample of
    ``latency_ms``, no profiles, no decode): the paired pass times every candidate together. One
    proxy run per call (``train.seeds`` of the search is what the confirmation extends, seed by
    seed). A generated task is drawn at ``seed`` too, so an extra seed is independent of the first in
    its data as well as in its initialisation and batch order."""
    quick = replace(settings.latency, warmup=0, repeats=1, min_sample_ms=0.0, max_seconds=1e-6)
    return replace(settings, seed=seed, ladder=(), profiles=(), decode=False, latency=quick,
                   train=replace(settings.train, seeds=1))


def is_quality(name: str) -> bool:
    """Whether metric ``name`` depends on the seed (accuracy, losses, bits per byte, zero-cost
    scores, user metrics): a registered metric that is not a cost (costs exist per profile and are
    counted or timed, not trained). What :func:`combine` averages over seeds."""
    from evaluators.metrics import METRIC_REGISTRY

    base, profile = split_metric(name)
    return not profile and base in METRIC_REGISTRY and not METRIC_REGISTRY[base].per_profile


def combine(runs: Sequence[Mapping], first: Optional[Mapping] = None) -> dict:
    """The quality metrics of a candidate over seeds: ``<m>`` (the mean), ``<m>_std`` (the sample
    standard deviation, ddof=1; left out for one seed) and ``<m>_n`` (the seeds), from ``runs``
    (one metrics dict per seed) and ``first``, the values stored by the search (a mean over its
    ``<m>_n`` seeds, 1 when absent, with its ``<m>_std``), when given."""
    names = [m for m in dict.fromkeys([*(first or {}), *(k for r in runs for k in r)]) if is_quality(m)]
    out = {}
    for m in names:
        xs = [float(r[m]) for r in runs if _number(r.get(m))]
        n0, mean0, ss0 = _summary(first or {}, m)
        n = n0 + len(xs)
        if n == 0:
            continue
        mean = (n0 * mean0 + sum(xs)) / n
        ss = ss0 + n0 * (mean0 - mean) ** 2 + sum((x - mean) ** 2 for x in xs)
        out[m], out[f"{m}_n"] = mean, n
        if n >= 2:
            out[f"{m}_std"] = math.sqrt(ss / (n - 1))
    return out


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _summary(values: Mapping, m: str) -> tuple[int, float, float]:
    """(count, mean, sum of squared deviations) of metric ``m`` as stored: a mean over ``<m>_n``
    seeds with its ``<m>_std`` (a study searched with one seed has neither: one value)."""
    if not _number(values.get(m)):
        return 0, 0.0, 0.0
    n = int(values.get(f"{m}_n") or 1)
    std = values.get(f"{m}_std")
    return n, float(values[m]), (float(std) ** 2 * (n - 1) if n > 1 and _number(std) else 0.0)


def timed_profiles(settings: "EvalSettings", io: "TaskIO") -> list[tuple[Profile, str]]:
    """``(profile, metric)`` of every timed cost a search of ``settings`` measures: ``latency_ms``
    at the task's shape (the profile named ``""``), ``decode_ms`` there when the search times it, and
    each deployment profile's ``latency_ms@p`` / ``decode_ms@p`` it names."""
    from evaluators.profile_costs import task_profile

    task = task_profile(io, settings.latency)
    out = [(task, "latency_ms")] + ([(task, "decode_ms")] if settings.decode else [])
    for request in settings.profiles:
        out += [(request.profile, m) for m in TIMED if request.wants(m)]
    return out


def paired_costs(archs: Mapping[str, "ArchSpec"], io: "TaskIO", profile: Profile, metric: str,
                 settings: "EvalSettings", *, rounds: int) -> dict[str, dict]:
    """``{name: {metric@profile: median, <prefix>_ci_low@profile, <prefix>_ci_high@profile,
    <prefix>_ratio@profile, ...}}`` (:meth:`evaluators.latency.PairedTiming.summary`): the model of every candidate in
    ``archs`` built at ``profile`` (random weights seeded with the search's seed: a timing does
    not depend on them) and timed in one :func:`evaluators.latency.paired_timing` pass of
    ``rounds`` rounds, with the ``latency:`` section's warm-up and sample length and the profile's
    batch, device, dtype and threads. ``metric``: ``latency_ms`` (a forward) or ``decode_ms`` (a
    decoding step at the end of a profile-length context). Every model is held at once."""
    from evaluators.latency import clock_for, paired_timing, torch_threads
    from evaluators.profile_costs import latency_config

    cfg = latency_config(settings.latency, profile)
    with _profile_calls(archs, io, profile, metric, cfg, seed=settings.seed) as calls, torch_threads(cfg.threads):
        timing = paired_timing(calls, rounds, clock=clock_for(cfg.device), rng=settings.seed, warmup=cfg.warmup,
                               min_sample_ms=cfg.min_sample_ms)
    prefix = metric.removesuffix("_ms")
    return {name: {metric_name(k, profile.name): v for k, v in values.items()}
            for name, values in timing.summary(prefix).items()}


@contextlib.contextmanager
def _profile_calls(archs: Mapping[str, "ArchSpec"], io: "TaskIO", profile: Profile, metric: str, cfg, *, seed: int):
    """``{name: call}``, inside inference mode: each candidate's profile model on ``cfg``'s device
    and dtype, ``call`` running its forward on an example batch, or (``decode_ms``) one decoding
    step from a cache prefilled to the profile's length less one (as ``evaluators.decode``)."""
    import torch

    from evaluators.latency import on_device
    from search_spaces.deploy_profiles import profile_model

    io_p = profile.task_io(io)
    if metric == "decode_ms" and not (io_p.kind == "tokens" and io_p.causal and io_p.per_token):
        raise ValueError(f"decode_ms needs a causal per-token task on tokens; this one reads {io_p.kind}")
    calls = {}
    with torch.inference_mode():
        for name, arch in archs.items():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = profile_model(arch, io, profile)
            model, x = on_device(model, io_p, cfg)
            calls[name] = _decode_step(model, x) if metric == "decode_ms" else functools.partial(model, x)
        yield calls


def _decode_step(model, tokens):
    """One decoding step of the last token of ``tokens`` (B, seq_len), from the cache of the rest."""
    _, cache = model.prefill(tokens[:, :-1])
    last = tokens[:, -1]
    return lambda: model.decode_step(last, cache)
