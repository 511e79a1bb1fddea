"""On-device latency of a model's forward pass at the task's shape (CPU, or CUDA with events).

One timer loop, :func:`time_calls`, times a whole model, a decode step (``evaluators.decode``) and
a model's parts in place (``evaluators.block_parts``): warm-up runs, then rounds of timed runs;
the median is the latency and MAD / median (the robust relative spread) is recorded beside it.
Rounds continue until the spread is under ``target_spread``, or the median is known to within
``target_ci`` (its 95% confidence interval, recorded as ``latency_ci`` relative to the median and
as ``latency_ci_low`` / ``latency_ci_high`` in ms), or ``max_seconds`` is spent. A timed sample is as many back-to-back calls as last ``min_sample_ms`` (reported per
call). The clock is the host's on the CPU (at a fixed torch thread count) and CUDA events on a GPU.
Candidates compared with each other (``nas confirm``) are timed by :func:`paired_timing` on the same
clocks: interleaved rounds, so the machine's drift falls on all of them alike and cancels in their ratios.
Peak memory (``peak_mem_mb``): on CPU the tensors of one untimed forward, counted by
``evaluators.memory``; on CUDA ``torch.cuda.max_memory_allocated`` over the timed runs."""

from __future__ import annotations

import math
import platform
import random
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Optional, Sequence, Union

import torch

from evaluators.cost import example_input
from evaluators.memory import peak_memory_bytes
from search_spaces.schema import from_mapping, setting
from search_spaces.task_io import TaskIO

__all__ = ["DEVICES", "DEVICE_PATTERN", "DTYPES", "CudaClock", "LatencyConfig", "PairedTiming", "Timing", "WallClock",
           "chain_timer", "clock_for", "environment", "measure_latency", "median_ci", "on_device", "paired_timing",
           "peak_memory_mb", "time_calls", "timed_rounds", "torch_threads"]

DEVICES = ("cpu", "cuda")
DEVICE_PATTERN = r"cpu|cuda(:[0-9]+)?"  # cuda:<index> picks one of several GPUs
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class LatencyConfig:
    """The ``latency:`` section of a space file, declared: each setting's type and range."""

    batch_size: int = setting(1, low=1)
    threads: int = setting(1, low=1, doc="torch threads while timing (CPU)")
    warmup: int = setting(3, low=0, doc="untimed runs first")
    repeats: int = setting(15, low=1, doc="timed runs per round")
    target_spread: float = setting(0.05, low=0, doc="stop when MAD / median is below this ...")
    # ... or when the median is pinned down to within this fraction (half-width of its 95%
    # confidence interval over median): a noisy machine's spread never gets under
    # target_spread, but enough samples still fix the median ...
    target_ci: float = setting(0.05, low=0)
    max_seconds: float = setting(5.0, above=0, doc="... or when this much time has been spent timing")
    # a timed sample is k back-to-back calls (k chosen once, after warm-up) lasting at least this
    # long, reported per call: sub-millisecond forwards are otherwise dominated by timer and
    # scheduler jitter, and their spread rarely converges
    min_sample_ms: float = setting(2.0, low=0)
    device: str = setting("cpu", pattern=DEVICE_PATTERN, what="cpu, cuda or cuda:<index>")
    dtype: str = setting("float32", choices=DTYPES, doc="weights and float inputs in this dtype while timing")

    @classmethod
    def from_dict(cls, d: dict) -> "LatencyConfig":
        """From a space file's ``latency:`` mapping; :class:`SettingError` names ``latency.<key>``."""
        return from_mapping(cls, d, "latency")


def _median_mad(xs: list[float]) -> tuple[float, float]:
    med = statistics.median(xs)
    return med, statistics.median(abs(x - med) for x in xs)


def median_ci(xs: list[float]) -> tuple[float, float]:
    """Distribution-free 95% confidence interval of the median, from order statistics: the j-th
    smallest and j-th largest sample, j the largest count with P(Binomial(n, 1/2) < j) <= 2.5%
    (exact up to 50 samples, the normal approximation above). No assumption on the shape of the
    timing distribution (skewed, bimodal); ``(min, max)`` when n is too small for 95%."""
    ys = sorted(xs)
    n = len(ys)
    if n <= 50:
        j, tail = 0, 0.0
        while j < n and tail + math.comb(n, j) / 2**n <= 0.025:
            tail += math.comb(n, j) / 2**n
            j += 1
    else:
        j = math.floor(n / 2 - 0.98 * math.sqrt(n))
    j = max(j, 1)
    return ys[j - 1], ys[n - j]


@torch.inference_mode()
def peak_memory_mb(model: torch.nn.Module, io: TaskIO, cfg: LatencyConfig = LatencyConfig()) -> float:
    """MiB of tensors one forward at the latency shape allocates (CPU, ``evaluators.memory``): exact
    and independent of machine load, so it needs no quiet device (parallel backends count it
    outside the latency lock)."""
    model, x = on_device(model, io, replace(cfg, device="cpu"))
    return peak_memory_bytes(model, x) / 2**20


def on_device(model: torch.nn.Module, io: TaskIO, cfg: LatencyConfig) -> tuple:
    """``(model, x)``: the model in eval mode moved to ``cfg.device`` and ``cfg.dtype`` (in place)
    and an example batch of ``cfg.batch_size`` there (float inputs in ``cfg.dtype``, token ids as
    they are)."""
    dev, dtype = torch.device(cfg.device), getattr(torch, cfg.dtype)
    model = model.to(device=dev, dtype=dtype).eval()
    x = example_input(io, cfg.batch_size).to(dev)
    return model, (x.to(dtype) if x.is_floating_point() else x)


@torch.inference_mode()
def measure_latency(model: torch.nn.Module, io: TaskIO, cfg: LatencyConfig = LatencyConfig(), *,
                    memory: bool = True) -> dict:
    """Time ``model(x)`` for a batch of ``cfg.batch_size`` at the task's input shape, under
    ``torch.inference_mode`` as a deployed model runs (no autograd graph is recorded; with grad
    mode on, recording it was 25-40% of a small model's CPU forward).

    Returns latency_ms (median), latency_mad_ms, latency_spread (MAD/median), latency_runs,
    latency_ci (relative half-width of the median's 95% interval), latency_ci_low and
    latency_ci_high (its ends, ms), latency_rounds, latency_converged (spread or confidence interval under target
    before the time limit) and
    peak_mem_mb (MiB allocated by one forward above what was allocated before it).
    """
    if cfg.device.startswith("cuda"):
        return _measure_cuda(model, io, cfg)
    if cfg.device != "cpu":
        raise ValueError(f"latency.device: {cfg.device!r} is not one of ['cpu', 'cuda', 'cuda:<index>']")
    model, x = on_device(model, io, cfg)
    with torch_threads(cfg.threads):
        result = time_calls([lambda: model(x)], cfg).summary()
        if memory:  # one forward of its own, untimed (memory=False: the caller counts it, outside a latency lock)
            result["peak_mem_mb"] = peak_memory_bytes(model, x) / 2**20
    return result


def _measure_cuda(model: torch.nn.Module, io: TaskIO, cfg: LatencyConfig) -> dict:
    """CUDA: :func:`time_calls` with CUDA events; also the peak memory allocated during the timed
    runs, above what the warmed-up model holds."""
    if not torch.cuda.is_available():
        raise ValueError(f"latency.device is {cfg.device!r} but no CUDA device is available")
    dev = torch.device(cfg.device)
    model, x = on_device(model, io, cfg)
    base = {}

    def after_warmup():
        torch.cuda.reset_peak_memory_stats(dev)
        base["bytes"] = torch.cuda.memory_allocated(dev)

    result = time_calls([lambda: model(x)], cfg, ready=after_warmup).summary()
    result["peak_mem_mb"] = (torch.cuda.max_memory_allocated(dev) - base["bytes"]) / 2**20
    model.to("cpu", torch.float32)
    return result


@contextmanager
def torch_threads(n: int):
    """Torch runs on ``n`` threads inside; the previous count is restored after."""
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


class WallClock:
    """The host's clock, for :func:`chain_timer`: a mark is a reading of ``now`` in seconds
    (``time.perf_counter`` unless a test passes a fake clock). ``now`` is also the clock
    :func:`timed_rounds` spends ``max_seconds`` by."""

    def __init__(self, now: Optional[Callable[[], float]] = None):
        self.now = now or time.perf_counter

    def mark(self):
        return self.now()

    def ms(self, a, b) -> float:
        return (b - a) * 1e3

    def sync(self) -> None:
        """Wait until the work queued so far has run (on the host it has)."""


class CudaClock(WallClock):
    """The GPU's clock: a mark is a CUDA event recorded on the current stream, so a span is the
    device's time between two marks, however far ahead of it the host runs."""

    def mark(self):
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def ms(self, a, b) -> float:
        return a.elapsed_time(b)

    def sync(self) -> None:
        torch.cuda.synchronize()


def clock_for(device: str) -> WallClock:
    """CUDA events on a CUDA device, the host's clock elsewhere."""
    return CudaClock() if device.startswith("cuda") else WallClock()


def chain_timer(calls: Sequence[Callable[[], object]], clock: WallClock):
    """``once(k)``: each call's ms, summed over ``k`` runs of ``calls`` in order. The clock is
    marked before the first call and where each call ends, so a call's time runs from the
    previous call's end to its own and the calls' times add up to the whole run's; a single call
    is marked only before and after its ``k`` runs (a plain timer)."""
    every_call = len(calls) > 1

    def once(k: int) -> list[float]:
        marks, owners = [clock.mark()], []
        for run in range(k):
            for i, call in enumerate(calls):
                call()
                if every_call or run == k - 1:
                    marks.append(clock.mark())
                    owners.append(i)
        clock.sync()
        ms = [0.0] * len(calls)
        for i, a, b in zip(owners, marks, marks[1:]):
            ms[i] += clock.ms(a, b)
        return ms

    return once


def time_calls(calls: Sequence[Callable[[], object]], cfg: LatencyConfig, clock: Optional[WallClock] = None, *,
               ready: Optional[Callable[[], None]] = None) -> "Timing":
    """The timer loop of every measurement: a whole model or a decode step (one call), or a
    model's parts in place (the parts in forward order). ``cfg.warmup`` untimed runs of ``calls``
    in order, the clock synchronized, ``ready()`` when given (CUDA resets its peak-memory counter
    there), then :func:`timed_rounds` of :func:`chain_timer`. ``clock``: :func:`clock_for`
    ``cfg.device`` unless given (tests pass a :class:`WallClock` of a fake clock)."""
    clock = clock or clock_for(cfg.device)
    for _ in range(cfg.warmup):
        for call in calls:
            call()
    clock.sync()
    if ready is not None:
        ready()
    return timed_rounds(chain_timer(calls, clock), cfg, clock.now)


@dataclass(frozen=True)
class Timing:
    """What :func:`timed_rounds` measured: each call's samples (ms per call), the rounds it took,
    the calls per sample and whether the calls' sum met a stopping rule before the time limit."""

    samples: tuple[tuple[float, ...], ...]
    rounds: int
    calls_per_sample: int
    converged: bool

    def summary(self, prefix: str = "latency") -> dict:
        """The metrics of the calls' sum (of the one call, timing a whole model): ``<prefix>_ms``
        (median), ``_mad_ms``, ``_spread`` (MAD / median), ``_ci`` (half-width of the median's 95%
        confidence interval / median), ``_ci_low`` and ``_ci_high`` (that interval's ends, ms:
        :func:`median_ci`), ``_runs`` (timed samples), ``_calls_per_sample``, ``_rounds`` and
        ``_converged``."""
        sums = [sum(s) for s in zip(*self.samples)]
        med, mad, spread, ci = _stats(sums)
        low, high = median_ci(sums)
        return {f"{prefix}_ms": med, f"{prefix}_mad_ms": mad, f"{prefix}_spread": spread, f"{prefix}_ci": ci,
                f"{prefix}_ci_low": low, f"{prefix}_ci_high": high,
                f"{prefix}_runs": len(self.samples[0]), f"{prefix}_calls_per_sample": self.calls_per_sample,
                f"{prefix}_rounds": self.rounds, f"{prefix}_converged": bool(self.converged)}

    def each(self) -> list[tuple[float, float, int]]:
        """``(median ms per call, MAD / median, samples)`` of each call."""
        out = []
        for times in self.samples:
            med, _mad, spread, _ci = _stats(times)
            out.append((med, spread, len(times)))
        return out


def timed_rounds(once, cfg: LatencyConfig, now: Optional[Callable[[], float]] = None) -> Timing:
    """The stopping rule: rounds of ``cfg.repeats`` samples ``once(k)`` (each call's total ms over
    ``k`` runs, kept per run) until the robust spread (MAD / median) of the calls' sum is under
    ``cfg.target_spread``, or its median's 95% confidence interval is within ``cfg.target_ci`` of
    it, or ``cfg.max_seconds`` have passed by ``now`` (``time.perf_counter`` unless given). ``k``
    (runs per sample) is the smallest count whose sample lasts ``cfg.min_sample_ms``, from one
    probe."""
    now = now or time.perf_counter
    start = now()
    probe = sum(once(1))
    k = max(1, min(10_000, math.ceil(cfg.min_sample_ms / probe))) if probe > 0 else 1
    samples: list[list[float]] = []
    rounds = 0
    while True:
        rounds += 1
        for _ in range(cfg.repeats):
            sample = once(k)
            samples = samples or [[] for _ in sample]
            for times, t in zip(samples, sample):
                times.append(t / k)
        _med, _mad, spread, ci = _stats([sum(ts) for ts in zip(*samples)])
        converged = spread <= cfg.target_spread or ci <= cfg.target_ci
        if converged or now() - start >= cfg.max_seconds:
            return Timing(tuple(map(tuple, samples)), rounds, k, converged)


def _stats(times: list[float]) -> tuple[float, float, float, float]:
    """``(median, MAD, MAD / median, CI half-width / median)`` of ms samples."""
    med, mad = _median_mad(times)
    lo, hi = median_ci(times)
    return med, mad, (mad / med if med > 0 else 0.0), ((hi - lo) / (2 * med) if med > 0 else 0.0)


@dataclass(frozen=True)
class PairedTiming:
    """What :func:`paired_timing` measured: each candidate's ms per call, one sample per round (sample
    ``r`` of every candidate was taken in round ``r``), and the calls each sample ran back to back."""

    samples: Mapping[str, tuple[float, ...]]
    calls_per_sample: Mapping[str, int]

    @property
    def rounds(self) -> int:
        return len(next(iter(self.samples.values())))

    def fastest(self) -> str:
        """The candidate with the lowest median (the first of the tied ones, in the order given)."""
        return min(self.samples, key=lambda n: statistics.median(self.samples[n]))

    def ratios(self, name: str) -> list[float]:
        """``name``'s time over the fastest candidate's, round by round: both were timed in the same
        round, so a machine that drifts (load, clock, heat) scales both alike and the ratio keeps."""
        base = self.samples[self.fastest()]
        return [t / b if b > 0 else math.nan for t, b in zip(self.samples[name], base)]

    def summary(self, prefix: str = "latency") -> dict[str, dict]:
        """``{name: metrics}``: ``<prefix>_ms`` (median over rounds), ``<prefix>_ci_low`` and
        ``_ci_high`` (the ends of the median's 95% confidence interval, :func:`median_ci`, in ms),
        ``<prefix>_ci`` (its half-width / median, as :meth:`Timing.summary`'s), ``<prefix>_ratio``
        (the median of the per-round ratios to the fastest candidate: 1.0 for it),
        ``<prefix>_ratio_ci_low`` and ``_ratio_ci_high`` (that median's 95% interval) and
        ``<prefix>_runs`` (the samples: one per round)."""
        out = {}
        for name, times in self.samples.items():
            med, ratios = statistics.median(times), self.ratios(name)
            (lo, hi), (rlo, rhi) = median_ci(list(times)), median_ci(ratios)
            out[name] = {f"{prefix}_ms": med, f"{prefix}_ci_low": lo, f"{prefix}_ci_high": hi,
                         f"{prefix}_ci": (hi - lo) / (2 * med) if med > 0 else 0.0,
                         f"{prefix}_ratio": statistics.median(ratios), f"{prefix}_ratio_ci_low": rlo,
                         f"{prefix}_ratio_ci_high": rhi, f"{prefix}_runs": len(times)}
        return out


def paired_timing(calls: Mapping[str, Callable[[], object]], rounds: int, *, clock: Optional[WallClock] = None,
                  rng: Union[random.Random, int, None] = None, warmup: int = 1,
                  min_sample_ms: float = 0.0) -> PairedTiming:
    """Time several candidates against each other: ``warmup`` untimed runs of each, then
    ``rounds`` interleaved rounds, every candidate timed once per round in an order shuffled each
    round (``rng``: a ``random.Random`` or a seed), so whatever the machine does meanwhile (load
    from elsewhere, frequency scaling, heat) falls on all of them alike and cancels in their
    ratios; timing one candidate after the other lets it fall on some and not others. A sample is
    as many back-to-back calls of a candidate as last ``min_sample_ms`` (from one probe each, as
    :func:`timed_rounds` chooses), reported per call; the clock is the timer loop's
    (:func:`chain_timer` on a :class:`WallClock`, :class:`CudaClock`, or a test's fake clock)."""
    if not calls:
        raise ValueError("paired_timing: no calls to time")
    if rounds < 1:
        raise ValueError(f"paired_timing: rounds must be >= 1, got {rounds}")
    clock = clock or WallClock()
    rng = rng if isinstance(rng, random.Random) else random.Random(rng)
    for _ in range(warmup):
        for call in calls.values():
            call()
    clock.sync()
    timers = {name: chain_timer([call], clock) for name, call in calls.items()}
    k = {}
    for name, once in timers.items():
        probe = once(1)[0]
        k[name] = max(1, min(10_000, math.ceil(min_sample_ms / probe))) if probe > 0 else 1
    samples: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            samples[name].append(timers[name](k[name])[0] / k[name])
    return PairedTiming({n: tuple(ts) for n, ts in samples.items()}, k)


def environment(device: str = "cpu") -> dict:
    """Where measurements were taken: stored with the study."""
    import os

    env = {}
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        env = {"gpu": props.name, "cuda": torch.version.cuda, "gpu_memory_gb": round(props.total_memory / 2**30, 1)}
        try:
            import triton

            env["triton"] = triton.__version__
        except ImportError:
            pass
    return {
        **env,
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
