"""Cost metrics at a deployment profile: ``latency_ms@long``, ``flops@long``, ... (issue 18).

A space's ``deploy:`` profiles (:mod:`search_spaces.deploy_profiles`) say where the model will run. For
each profile a search names in its objectives, constraints or ladder filters, the candidate's
ArchSpec is scaled to the profile (:func:`search_spaces.deploy_profiles.scale_arch`), built at the
profile's input shape with random weights (seeded with the search's seed) and measured there:

- ``params@p``: parameters of the profile's model (always computed, it costs nothing);
- ``flops@p``: forward FLOPs per sample at the profile's shape (exact count, ``evaluators.flops``);
- ``state_mb@p``: what a causal decoder keeps per sequence at the profile's length, at its dtype;
- ``latency_ms@p`` and ``peak_mem_mb@p``: timed and counted as ``latency_ms`` is, with the
  ``latency:`` section's warm-up, rounds and limits and the profile's batch, device, dtype and
  threads (the spread and confidence columns come along: ``latency_spread@p``, ...);
- ``decode_ms@p``: per-token decode at the end of a profile-length context.

Quality never comes from here: accuracy and every trained metric stay with the proxy. Profile
metrics do not depend on training (random weights), so they are known before training: ladder
``filter`` rungs may bound them, and a candidate a filter stops is never trained. Why random
weights are enough, and where they would not be, is in docs/profiles.md.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Optional

import torch

from evaluators.cost import count_params, decode_state_mb, flops_per_sample
from evaluators.decode import measure_decode
from evaluators.errors import TrialFailure
from evaluators.latency import LatencyConfig, measure_latency, peak_memory_mb
from evaluators.model_memory import check_profile
from search_spaces.arch import ArchSpec, ArchValidationError
from search_spaces.deploy_profiles import Profile, metric_name, profile_model, split_metric
from search_spaces.failures import first_line
from search_spaces.task_io import TaskIO

__all__ = ["ProfileRequest", "latency_config", "measure_profile", "profile_requests", "task_profile"]

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ProfileRequest:
    """What to measure at one profile: the profile and the metric names (unsuffixed)."""

    profile: Profile
    metrics: tuple = ()

    def wants(self, *names: str) -> bool:
        return any(n in self.metrics for n in names)


def profile_requests(names, profiles: Mapping[str, Profile]) -> tuple:
    """The :class:`ProfileRequest` of each profile that a metric in ``names`` is suffixed with
    (``latency_ms@long``), in the order of ``profiles``; names are assumed already checked
    (``evaluators.metrics.resolve_metric``)."""
    wanted: dict = {}
    for n in names:
        base, p = split_metric(n)
        if p:
            wanted.setdefault(p, []).append(base)
    return tuple(ProfileRequest(profiles[p], tuple(dict.fromkeys(wanted[p]))) for p in profiles if p in wanted)


def latency_config(base: LatencyConfig, profile: Profile) -> LatencyConfig:
    """The ``latency:`` section's timing rules with the profile's batch, device, dtype, threads."""
    return replace(base, batch_size=profile.batch_size, device=profile.device, dtype=profile.dtype,
                   threads=profile.threads)


def task_profile(io: TaskIO, latency: LatencyConfig) -> Profile:
    """The implicit profile (name ``""``) of the unsuffixed metrics: the task's shape under the
    ``latency:`` section, scale 1."""
    shape = {"image_size": io.image_size} if io.kind == "image" else {"seq_len": io.seq_len}
    return Profile("", batch_size=latency.batch_size, device=latency.device, dtype=latency.dtype,
                   threads=latency.threads, **shape)


def measure_profile(arch: ArchSpec, io: TaskIO, request: ProfileRequest, latency: LatencyConfig, *,
                    seed: int = 0, lock: Optional[Callable[[], contextlib.AbstractContextManager]] = None) -> dict:
    """``{metric@profile: value}`` for the metrics of ``request`` (and ``params@profile``), on the
    profile's model built from ``arch`` with random weights seeded by ``seed``. ``lock()`` gives a
    context manager held while timing (the device alone, as ``evaluate``'s ``latency_lock``).
    A model that cannot be built at the profile, would not fit in this machine's memory (checked
    before it is built: :mod:`evaluators.model_memory`) or runs out of memory there, is a
    :class:`TrialFailure` naming the profile."""
    p, io_p = request.profile, request.profile.task_io(io)
    try:
        check_profile(arch, io, p)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = profile_model(arch, io, p)
        out = _static(model, io_p, request)
        out.update(_timed(model, io_p, request, latency_config(latency, p), lock))
    except ArchValidationError as e:
        raise TrialFailure(f"profile {p.name}: the scaled architecture is invalid: {e}") from e
    except (torch.OutOfMemoryError, MemoryError) as e:
        raise TrialFailure(f"profile {p.name}: out of memory: {first_line(e)}") from e
    return {metric_name(k, p.name): v for k, v in out.items()}


def _static(model: torch.nn.Module, io: TaskIO, request: ProfileRequest) -> dict:
    """Counted, not timed: parameters, FLOPs, decoder state."""
    out = {"params": count_params(model)}
    if request.wants("flops"):
        out["flops"] = flops_per_sample(model, io)
    if request.wants("state_mb"):
        state = decode_state_mb(model, io.seq_len, BYTES[request.profile.dtype])
        if state is None:
            raise TrialFailure(f"profile {request.profile.name}: state_mb is not defined for this model")
        out["state_mb"] = state
    return out


def _timed(model: torch.nn.Module, io: TaskIO, request: ProfileRequest, cfg: LatencyConfig, lock) -> dict:
    out = {}
    cpu = cfg.device == "cpu"
    if cpu and request.wants("peak_mem_mb"):  # counted: no need to hold the device alone
        out["peak_mem_mb"] = peak_memory_mb(model, io, cfg)
    time_it = request.wants("latency_ms") or (not cpu and request.wants("peak_mem_mb"))
    if not (time_it or request.wants("decode_ms")):
        return out
    with lock() if lock is not None else contextlib.nullcontext():
        if time_it:
            out.update(measure_latency(model, io, cfg, memory=not cpu))
        if request.wants("decode_ms"):
            out.update(measure_decode(model, io, cfg))
    return out
