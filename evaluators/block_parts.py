"""A model as the parts its latency is the sum of: stem, transitions, blocks, readout.

:func:`model_parts` lists the parts of an architecture at a deployment profile from the ArchSpec
alone (no tensor is made): each part's key is the canonical JSON of what the part computes and the
input shape it sees there, e.g. a block's spec (mixer parameters with their defaults filled in,
FFN, norm), its width, causality, the grid it sees, and its input ``(B, N, C)``. Two models that
share a block at the same shape share its key, whatever else they contain, so one timing serves
both.

:func:`time_parts` builds the profile's model (random weights), runs it once to capture what each
part receives, checks those inputs against the keys (a key that does not describe its part is a
bug, not a measurement), and times each part in place: the parts run one after another in forward
order, as the model's forward runs them, and a clock read between two parts gives each its share,
with the rules of ``measure_latency`` (warm-up, then rounds of samples until the spread or the
median's confidence interval of the whole run is under target) on the profile's device, dtype and
threads, under ``torch.inference_mode``. Timed alone, in a loop of its own, a small part ran up to
20% faster than inside a model (its code and data stay in the caches), so the sums fell short of
the models they predicted (``benchmarks/part_context.py``); in place, the sum of the parts is the
model's run.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Iterable, Optional

import torch

from evaluators.latency import LatencyConfig, WallClock, on_device, time_calls, torch_threads
from evaluators.model_memory import check_profile
from search_spaces.arch import ArchSpec, BlockSpec
from search_spaces.deploy_profiles import Profile, profile_model, scale_arch
from search_spaces.mixer_registry import get_mixer_info
from search_spaces.task_io import TaskIO

__all__ = ["Part", "PartTiming", "model_parts", "part_calls", "time_in_place", "time_parts"]

KINDS = ("stem", "transition", "block", "readout")


@dataclass(frozen=True)
class Part:
    """One timed piece of a model: ``kind`` (one of :data:`KINDS`) and ``key``, the canonical JSON
    of what it computes and its input shape (the table key)."""

    kind: str
    key: str

    @property
    def input_shape(self) -> tuple:
        return tuple(json.loads(self.key)["input"])


@dataclass(frozen=True)
class PartTiming:
    """A part timed in place: median ms per call, robust spread (MAD / median), timed samples."""

    median_ms: float
    spread: float
    n: int


def _canonical(d: dict) -> str:
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


def _block_spec(block: BlockSpec) -> dict:
    """The block as data, its mixer's parameters completed with the registry's defaults (so
    ``softmax`` and ``softmax {heads: 1}`` share a key when 1 is the default)."""
    d = dataclasses.asdict(block)
    d["mixer"]["params"] = {**get_mixer_info(block.mixer.type).defaults(), **block.mixer.params}
    return d


def _halve(n: int) -> int:
    """Tokens (or a grid side) after a stride-2 downsampling: merge pads odd lengths, conv (k3, s2,
    p1) rounds up; both give ceil(n / 2)."""
    return (n + 1) // 2


def _stem_tokens(arch: ArchSpec, io: TaskIO) -> tuple[int, Optional[tuple]]:
    """Tokens after the stem, and the grid for images (as the builder computes them)."""
    if io.kind == "tokens":
        return io.seq_len, None
    s, p = arch.stem.effective_stride, arch.stem.patch
    if io.kind == "signal":
        return (io.seq_len - p) // s + 1, None
    hw = tuple((side - p) // s + 1 for side in io.image_size)
    return hw[0] * hw[1], hw


def model_parts(arch: ArchSpec, io: TaskIO, profile: Profile) -> tuple[Part, ...]:
    """The parts of ``arch`` at ``profile`` (scaled as :func:`~search_spaces.deploy_profiles.scale_arch`
    scales it, at the profile's input shape and batch), in forward order; transitions that do
    nothing (same width, no downsampling) are not parts."""
    arch_p, io_p, b = scale_arch(arch, profile), profile.task_io(io), profile.batch_size
    n, hw = _stem_tokens(arch_p, io_p)
    dim = arch_p.stages[0].dim
    parts = [Part("stem", _canonical({"part": "stem", "stem": dataclasses.asdict(arch_p.stem), "dim": dim,
                                      "io": dataclasses.asdict(io_p), "input": list(io_p.input_shape(b))}))]
    for stage in arch_p.stages:
        if stage.downsample != "none" or stage.dim != dim:
            key = {"part": "transition", "downsample": stage.downsample, "dim_in": dim, "dim_out": stage.dim,
                   "input": [b, n, dim], "hw": hw, "two_d": io_p.kind == "image"}
            parts.append(Part("transition", _canonical(key)))
            if stage.downsample != "none":
                hw = None if hw is None else (_halve(hw[0]), _halve(hw[1]))
                n = _halve(n) if hw is None else hw[0] * hw[1]
            dim = stage.dim
        for block in stage.blocks:
            key = {"part": "block", "block": _block_spec(block), "dim": dim, "causal": arch_p.causal,
                   "grid": io_p.kind == "image", "input": [b, n, dim], "hw": hw}
            parts.append(Part("block", _canonical(key)))
    parts.append(Part("readout", _canonical({"part": "readout", "dim": dim, "classes": io_p.num_classes,
                                             "per_token": io_p.per_token, "input": [b, n, dim]})))
    return tuple(parts)


def part_calls(model, x) -> tuple[list, list]:
    """``(calls, shapes)``: one zero-argument call per part of ``model`` (in :func:`model_parts`
    order), each on the input that part received in one forward of ``x``, and those inputs' shapes."""
    seen: list[tuple] = []
    hooks = []
    for transition, blocks in zip(model.transitions, model.stages):
        if not isinstance(transition, torch.nn.Identity):
            hooks.append(transition.register_forward_pre_hook(lambda m, a: seen.append((m, a))))
        for block in blocks:
            hooks.append(block.register_forward_pre_hook(lambda m, a: seen.append((m, a))))
    hooks.append(model.norm.register_forward_pre_hook(lambda m, a: seen.append((model.readout, a[:1]))))
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    calls = [lambda: model.embed_input(x)] + [(lambda f=f, a=a: f(*a)) for f, a in seen]
    return calls, [tuple(x.shape)] + [tuple(a[0].shape) for _, a in seen]


def time_parts(arch: ArchSpec, io: TaskIO, profile: Profile, latency: LatencyConfig, *, seed: int = 0,
               only: Optional[Iterable[str]] = None) -> dict[str, PartTiming]:
    """``{part key: timing}`` of the parts of ``arch`` at ``profile`` (those whose key is in
    ``only``, or all), each timed in place: the profile's model (random weights seeded by ``seed``)
    is run part by part in forward order, and each part's time is read between its neighbours'.
    ``latency`` gives the timing rules; the profile gives batch, device, dtype, threads. A model
    that would not fit in this machine's memory is :class:`~evaluators.errors.TooLarge`, before
    it is built."""
    parts = model_parts(arch, io, profile)
    check_profile(arch, io, profile)
    wanted = set(k.key for k in parts) if only is None else set(only)
    cfg = dataclasses.replace(latency, batch_size=profile.batch_size, device=profile.device, dtype=profile.dtype,
                              threads=profile.threads)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = profile_model(arch, io, profile)
    io_p = profile.task_io(io)
    model, x = on_device(model, io_p, cfg)
    try:
        with torch_threads(cfg.threads), torch.inference_mode():
            calls, shapes = part_calls(model, x)
            if shapes != [p.input_shape for p in parts]:
                raise RuntimeError(f"part inputs {shapes} differ from their keys {[p.input_shape for p in parts]}")
            return time_in_place(parts, calls, wanted, cfg)
    finally:
        model.to("cpu", torch.float32)


def time_in_place(parts, calls, wanted: set, cfg: LatencyConfig, clock: Optional[WallClock] = None) -> dict[str, PartTiming]:
    """Each part's time inside a run of all of them in forward order (as the model's forward runs
    them; :func:`~evaluators.latency.time_calls`, ``clock`` as there), for the parts whose key is in
    ``wanted``; a part that occurs more than once (a repeated block) gets the mean of its
    occurrences' medians."""
    by_key: dict[str, list] = {}
    for part, timing in zip(parts, time_calls(calls, cfg, clock).each()):
        if part.key in wanted:
            by_key.setdefault(part.key, []).append(timing)
    return {k: PartTiming(sum(t[0] for t in ts) / len(ts), max(t[1] for t in ts), sum(t[2] for t in ts))
            for k, ts in by_key.items()}
