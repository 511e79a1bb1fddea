"""On-device latency of a model's forward pass at the task's shape (CPU, or CUDA with events).

CPU: a fixed torch thread count, warm-up runs, then rounds of timed runs; the median is the
latency and MAD / median (the robust relative spread) is recorded beside it. Rounds continue
until the spread is under ``target_spread``, or the median is known to within ``target_ci``
(its 95% confidence interval, recorded as ``latency_ci``), or ``max_seconds`` is spent. A
timed sample is as many back-to-back calls as last ``min_sample_ms`` (reported per call).
Peak memory (``peak_mem_mb``): on CPU the tensors of one untimed forward, counted by
``evaluators.memory``; on CUDA ``torch.cuda.max_memory_allocated`` over the timed runs.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from dataclasses import dataclass, replace

import torch

from evaluators.cost import example_input
from evaluators.memory import peak_memory_bytes
from search_spaces.schema import from_mapping, setting
from search_spaces.task_io import TaskIO

__all__ = ["DEVICES", "DEVICE_PATTERN", "DTYPES", "LatencyConfig", "cpu_timer", "cuda_timer", "environment", "measure_latency",
           "median_ci", "on_device", "peak_memory_mb", "timed_rounds", "timed_rounds_each"]

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
    latency_ci, latency_rounds, latency_converged (spread or confidence interval under target
    before the time limit) and
    peak_mem_mb (MiB allocated by one forward above what was allocated before it).
    """
    if cfg.device.startswith("cuda"):
        return _measure_cuda(model, io, cfg)
    if cfg.device != "cpu":
        raise ValueError(f"latency.device: {cfg.device!r} is not one of ['cpu', 'cuda', 'cuda:<index>']")
    model, x = on_device(model, io, cfg)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        for _ in range(cfg.warmup):
            model(x)
        # one forward of its own, untimed (memory=False: the caller counts it, outside a latency lock)
        extra = {"peak_mem_mb": peak_memory_bytes(model, x) / 2**20} if memory else {}
        return {**timed_rounds(cpu_timer(lambda: model(x)), cfg), **extra}
    finally:
        torch.set_num_threads(prev_threads)


def cpu_timer(call):
    """``once(k)``: wall-clock ms of ``k`` back-to-back ``call()``s."""

    def once(k: int) -> float:
        t0 = time.perf_counter()
        for _ in range(k):
            call()
        return (time.perf_counter() - t0) * 1e3

    return once


def cuda_timer(call):
    """``once(k)``: ms between CUDA events recorded around ``k`` back-to-back ``call()``s."""

    def once(k: int) -> float:
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(k):
            call()
        b.record()
        b.synchronize()
        return a.elapsed_time(b)

    return once


def timed_rounds(once, cfg: LatencyConfig) -> dict:
    """Rounds of ``cfg.repeats`` samples ``once(k) / k`` (ms per call) until the robust spread
    (MAD / median) is under ``cfg.target_spread``, or the median's 95% confidence interval is
    within ``cfg.target_ci`` of it, or ``cfg.max_seconds`` have passed. ``k`` (calls per sample) is
    the smallest count whose sample lasts ``cfg.min_sample_ms``, from one probe."""
    (times,), rounds, k = _rounds(lambda k: (once(k),), cfg)
    med, mad, spread, ci, converged = _summary(times, cfg)
    return {
        "latency_ms": med,
        "latency_mad_ms": mad,
        "latency_spread": spread,
        "latency_ci": ci,  # half-width of the median's 95% confidence interval / median
        "latency_runs": len(times),  # timed samples
        "latency_calls_per_sample": k,
        "latency_rounds": rounds,
        "latency_converged": bool(converged),
    }


def timed_rounds_each(once, cfg: LatencyConfig) -> list[tuple[float, float, int]]:
    """:func:`timed_rounds` for several calls timed together: ``once(k)`` runs a sequence of calls
    ``k`` times and returns each call's total ms. Rounds go on until the sum of the calls meets the
    stopping rules; returns ``(median ms per call, MAD / median, samples)`` for each call."""
    per_call, _rounds_done, _k = _rounds(once, cfg)
    out = []
    for times in per_call:
        med, _mad, spread, _ci, _ok = _summary(times, cfg)
        out.append((med, spread, len(times)))
    return out


def _summary(times: list[float], cfg: LatencyConfig) -> tuple[float, float, float, float, bool]:
    """``(median, MAD, MAD / median, CI half-width / median, converged)`` of ms samples."""
    med, mad = _median_mad(times)
    spread = mad / med if med > 0 else 0.0
    lo, hi = median_ci(times)
    ci = (hi - lo) / (2 * med) if med > 0 else 0.0
    return med, mad, spread, ci, spread <= cfg.target_spread or ci <= cfg.target_ci


def _rounds(once, cfg: LatencyConfig) -> tuple[list[list[float]], int, int]:
    """The sampling loop of :func:`timed_rounds`: ``once(k)`` gives ms totals (one per timed call)
    of ``k`` runs; the stopping rules apply to their sum. Returns the per-call samples (ms per run),
    the rounds and ``k``."""
    start = time.perf_counter()
    probe = sum(once(1))
    k = max(1, min(10_000, math.ceil(cfg.min_sample_ms / probe))) if probe > 0 else 1
    per_call: list[list[float]] = []
    rounds = 0
    while True:
        rounds += 1
        for _ in range(cfg.repeats):
            sample = once(k)
            if not per_call:
                per_call = [[] for _ in sample]
            for times, t in zip(per_call, sample):
                times.append(t / k)
        converged = _summary([sum(ts) for ts in zip(*per_call)], cfg)[4]
        if converged or time.perf_counter() - start >= cfg.max_seconds:
            return per_call, rounds, k


def _measure_cuda(model: torch.nn.Module, io: TaskIO, cfg: LatencyConfig) -> dict:
    """CUDA: CUDA events around each forward (after synchronizing), warm-up first, rounds until the
    spread is under target or the time limit; also the peak memory allocated during one forward."""
    if not torch.cuda.is_available():
        raise ValueError(f"latency.device is {cfg.device!r} but no CUDA device is available")
    dev = torch.device(cfg.device)
    model, x = on_device(model, io, cfg)
    for _ in range(cfg.warmup):
        model(x)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)

    result = timed_rounds(cuda_timer(lambda: model(x)), cfg)
    result["peak_mem_mb"] = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
    model.to("cpu", torch.float32)
    return result


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
