"""Latency predicted from block latency tables: a model's latency is the sum of its parts' latencies.

A model at a deployment profile is a stem, its transitions, its blocks and a readout
(:mod:`evaluators.block_parts`); each part is timed once, in place within its model's run, at the
shape it sees at that profile, and kept in a :class:`LatencyTable` keyed by the part (its spec and
input shape) and the environment (:func:`environment_key`: CPU model, GPU name, torch version,
device, dtype, threads, timing method).
A part timed in one environment is never reused in another. The prediction of a model is the sum
of its parts' medians; parts missing from the table are timed on the spot (building the profile's
model with random weights) and stored, so the table fills as a search goes, and ``nas profile``
fills it up front.

The engine uses predictions in two places:

- a ladder rung ``predict`` (``evaluators.ladder``): a candidate whose predicted latency breaks
  the rung's bounds is stopped before it is trained (:func:`screen`);
- a profile with ``measure: predict``: its ``latency_ms@<profile>`` is the prediction, and a
  fraction ``recheck`` of the candidates (chosen by architecture hash, so the same ones on every
  worker) is also timed whole, stored as ``latency_ms@<profile>.measured`` with
  ``latency_ms@<profile>.rel_error`` = predicted / measured - 1 (:func:`with_prediction`).

Every prediction is stored as ``<metric>.predicted`` beside the objective it predicts.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Collection, Mapping, Optional

import torch

from evaluators.block_parts import PartTiming, model_parts, time_parts
from evaluators.errors import TrialFailure
from evaluators.latency import LatencyConfig
from search_spaces.arch import ArchSpec
from search_spaces.deploy_profiles import Profile, metric_name
from search_spaces.task_io import TaskIO

__all__ = ["LatencyTable", "MemoryTable", "Prediction", "Predictor", "cpu_model", "environment_key", "key_hash",
           "predicted_name", "rechecked", "screen", "uses_prediction", "with_prediction"]

PREDICTED, MEASURED, REL_ERROR = ".predicted", ".measured", ".rel_error"
# how parts are timed (``evaluators.block_parts``), part of the environment key: entries timed
# another way (before 2026-12-01: each part alone, in a loop of its own) are not mixed with these
TIMING = "in-place"


def key_hash(text: str) -> str:
    """32 hex digits naming a key (a part's or an environment's canonical JSON) in a table."""
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def predicted_name(metric: str) -> str:
    """``latency_ms@long`` -> ``latency_ms@long.predicted``."""
    return metric + PREDICTED


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_key(profile: Profile) -> str:
    """Canonical JSON of where a part's timing holds: CPU model, torch version, device type, dtype,
    threads, how parts are timed (:data:`TIMING`), and for CUDA the GPU's name and the CUDA
    version. Table entries are keyed by it."""
    env = {"cpu": cpu_model(), "torch": torch.__version__, "device": profile.device_type, "dtype": profile.dtype,
           "threads": profile.threads, "timing": TIMING}
    if profile.device_type == "cuda" and torch.cuda.is_available():
        env.update(gpu=torch.cuda.get_device_name(torch.device(profile.device)), cuda=torch.version.cuda)
    return json.dumps(env, sort_keys=True, separators=(",", ":"))


class LatencyTable(abc.ABC):
    """Part latencies keyed by (part key, environment key): both canonical JSON strings.

    Rules: the first timing stored for a key stands (a later :meth:`store` of the same key keeps it,
    so concurrent searches agree on every entry); :meth:`lookup` returns only entries of the given
    environment."""

    @abc.abstractmethod
    def lookup(self, env: str, keys: Collection[str]) -> dict[str, PartTiming]:
        """``{key: timing}`` for the ``keys`` stored under ``env`` (absent keys are left out)."""

    @abc.abstractmethod
    def store(self, env: str, timings: Mapping[str, PartTiming], profile: str = "") -> None:
        """Add ``timings`` (part key -> timing) under ``env``; ``profile`` names where they came from."""


class MemoryTable(LatencyTable):
    """A table in this process's memory (tests, benchmarks, an evaluation without a study)."""

    def __init__(self):
        self.entries: dict[tuple[str, str], PartTiming] = {}

    def lookup(self, env: str, keys: Collection[str]) -> dict[str, PartTiming]:
        return {k: self.entries[(k, env)] for k in keys if (k, env) in self.entries}

    def store(self, env: str, timings: Mapping[str, PartTiming], profile: str = "") -> None:
        for k, t in timings.items():
            self.entries.setdefault((k, env), t)


@dataclass(frozen=True)
class Prediction:
    """A model's predicted latency ``ms``: the sum over ``parts`` ((part, timing) in forward
    order); ``timed``: how many distinct parts were missing from the table and timed now."""

    ms: float
    parts: tuple
    timed: int


class Predictor:
    """Predicts models' latencies from ``table``, timing missing parts with the ``latency``
    section's rules (at each profile's batch, device, dtype, threads) while holding ``lock()``
    (a context manager factory: the device alone, as for ``latency_ms``). ``fill=False``: a
    missing part is a :class:`TrialFailure` instead."""

    def __init__(self, table: LatencyTable, latency: LatencyConfig = LatencyConfig(), *, seed: int = 0,
                 lock: Optional[Callable[[], contextlib.AbstractContextManager]] = None, fill: bool = True):
        self.table, self.latency, self.seed, self.lock, self.fill = table, latency, seed, lock, fill

    def predict(self, arch: ArchSpec, io: TaskIO, profile: Profile) -> Prediction:
        parts = model_parts(arch, io, profile)
        env = environment_key(profile)
        known = self.table.lookup(env, {p.key for p in parts})
        missing = {p.key for p in parts} - known.keys()
        if missing:
            known.update(self._time(arch, io, profile, env, missing))
        return Prediction(sum(known[p.key].median_ms for p in parts), tuple((p, known[p.key]) for p in parts),
                          len(missing))

    def _time(self, arch: ArchSpec, io: TaskIO, profile: Profile, env: str, missing: set) -> dict:
        where = f"profile {profile.name}" if profile.name else "the task's shape"
        if not self.fill:
            raise TrialFailure(f"latency table: {len(missing)} part(s) of this model at {where} are not in the table "
                               "for this environment (fill it with `nas profile`)")
        if profile.device_type == "cuda" and not torch.cuda.is_available():
            raise TrialFailure(f"latency table: {where} runs on {profile.device}, which this process cannot reach, "
                               "and the table lacks parts of this model (fill it with `nas profile` there)")
        with self.lock() if self.lock is not None else contextlib.nullcontext():
            timed = time_parts(arch, io, profile, self.latency, seed=self.seed, only=missing)
        self.table.store(env, timed, profile=profile.name)
        return timed


def uses_prediction(settings) -> bool:
    """Whether evaluation settings (``evaluators.evaluation.EvalSettings``) predict any latency: a
    ``predict`` ladder rung, or a profile with ``measure: predict`` whose latency is asked for."""
    return (any(r.kind == "predict" for r in settings.ladder)
            or any(r.profile.measure == "predict" and "latency_ms" in r.metrics for r in settings.profiles))


def rechecked(arch: ArchSpec, fraction: float) -> bool:
    """Whether ``arch`` is in the ``fraction`` of architectures whose prediction is checked by a
    whole-model measurement: decided by its hash, so every process picks the same ones."""
    return int(arch.arch_id, 16) / 16 ** len(arch.arch_id) < fraction


def with_prediction(runner: Callable, predictor: Predictor) -> Callable:
    """A profile runner (``runner(arch, io, request) -> metrics``, see ``evaluators.evaluation``)
    that, for a profile with ``measure: predict``, predicts ``latency_ms@<profile>`` instead of
    timing it, and times the whole model as well for the ``recheck`` sample."""

    def run(arch: ArchSpec, io: TaskIO, request) -> dict:
        p = request.profile
        if p.measure != "predict" or "latency_ms" not in request.metrics:
            return runner(arch, io, request)
        name = metric_name("latency_ms", p.name)
        t0 = time.perf_counter()
        pred = predictor.predict(arch, io, p)
        out = runner(arch, io, replace(request, metrics=tuple(m for m in request.metrics if m != "latency_ms")))
        out.update({name: pred.ms, predicted_name(name): pred.ms, f"{name}.parts_timed": pred.timed,
                    f"{name}.predict_s": time.perf_counter() - t0})
        if rechecked(arch, p.recheck):
            measured = runner(arch, io, replace(request, metrics=("latency_ms",)))[name]
            out.update({name + MEASURED: measured, name + REL_ERROR: pred.ms / measured - 1})
        return out

    return run


def screen(rung, arch: ArchSpec, io: TaskIO, task_profile: Profile, predictor: Predictor) -> tuple[dict, Optional[str]]:
    """A ``predict`` ladder rung: ``({<metric>.predicted: ms}, why)`` for each latency metric the
    rung bounds (``latency_ms`` at ``task_profile``, ``latency_ms@p`` at the rung's profile p);
    ``why`` is None when every prediction is within the bounds, else the first broken bound."""
    values: dict = {}
    for name in dict.fromkeys((*rung.max, *rung.min)):
        profile = rung.profiles.get(name, task_profile)
        values[name] = predictor.predict(arch, io, profile).ms
    why = None
    for name, bound in rung.max.items():
        if why is None and values[name] > bound:
            why = f"predicted {name} {values[name]:.4g} > max {bound:.4g}"
    for name, bound in rung.min.items():
        if why is None and values[name] < bound:
            why = f"predicted {name} {values[name]:.4g} < min {bound:.4g}"
    return {predicted_name(k): v for k, v in values.items()}, why
