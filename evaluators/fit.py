"""Will the space's models fit in this machine's memory? Checked before a search writes anything.

Every choice in a space file (a width, a depth, a batch size) must leave at least one model that
can be trained here. For each value the smallest model using it gets a *lower bound* on its
memory, computed without allocating anything: mixers and FFNs are built on PyTorch's ``meta``
device, which records shapes only, and their parameters are counted. Training keeps four fp32
copies of each parameter (weights, gradients and AdamW's two moments, 16 bytes) and at least one
activation tensor of the residual stream, batch x tokens x width. When even that bound exceeds the
memory available, every trial with the value would run out of memory (after spending time on
building and data), so the value is refused with the key that names it::

    my.yaml: arch.stages[0].dim: 200000 is not allowed (too large for this machine: any model with it
    has at least 480,012,800,000 parameters, 7153 GiB to train; 61 GiB of memory are available)

Parts whose size is not known (a mixer that cannot be built on ``meta``) count as zero, so the
bound stays a lower bound: a refused value can never fit, an accepted one may still fail later,
as a trial state with its reason (each trial's models are checked before they are built:
:mod:`evaluators.model_memory`).

A deployment profile (``deploy:``) is checked the same way: the smallest model of the space
scaled to the profile (its widths, depths and head counts) and built at its input shape is built
in float32 and run at the profile's batch (on a CPU profile its residual stream is held at least
once). When that cannot fit, the profile's setting that weighs most (of ``scale.dim``,
``scale.depth``, ``seq_len`` / ``image_size`` and ``batch_size``: the one whose default
shrinks the bound most) is refused::

    my.yaml: deploy.long.scale.dim: 1000x is not allowed (too large for this machine: the smallest
    model of this space at profile long has at least 8,194,880,000 parameters and needs at least
    30.5 GiB; 19.1 GiB of memory are available)

``$MIXER_NAS_MEMORY`` (bytes, or a number with a unit: ``512MiB``, ``8GB``) replaces the memory
this machine reports as available, for every check: to keep a search within part of a shared
machine, or to try a check without the memory it is about.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import replace
from typing import Callable, Optional

import torch

from evaluators.latency import LatencyConfig
from evaluators.train import TrainConfig
from search_spaces.deploy_profiles import Profile, Scale, scaled_params
from search_spaces.ffn import build_ffn
from search_spaces.mixer_registry import get_mixer
from search_spaces.schema import SettingError
from search_spaces.space import MixerChoice, Space, StageChoices, valid_params
from search_spaces.task_io import TaskIO

__all__ = ["MEMORY_ENV", "TRAIN_BYTES_PER_PARAM", "available_memory", "check_fits", "check_profiles", "mixer_params",
           "profile_floor", "size_text", "space_floor"]

TRAIN_BYTES_PER_PARAM = 16  # fp32 weights, gradients, AdamW exp_avg and exp_avg_sq
ACT_BYTES = 4  # fp32 activations
MAX_COMBOS = 256  # parameter combinations tried per mixer; beyond that the mixer counts as zero
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
UNSCALED = Scale()  # the proxy's own widths, depths and head counts
MEMORY_ENV = "MIXER_NAS_MEMORY"  # bytes the checks take as available, instead of what the machine reports
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
          "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def available_memory() -> Optional[int]:
    """Bytes of memory available to new processes: ``$MIXER_NAS_MEMORY`` when set, else Linux's
    MemAvailable; None if unknown. A :class:`SettingError` names a malformed ``$MIXER_NAS_MEMORY``."""
    if os.environ.get(MEMORY_ENV, "").strip():
        return _memory_setting(os.environ[MEMORY_ENV])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _memory_setting(raw: str) -> int:
    """``"8GiB"``, ``"512MB"``, ``"2e9"`` -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", raw)
    if m is None or m.group(2).lower() not in _UNITS or float(m.group(1)) <= 0:
        raise SettingError(f"${MEMORY_ENV}", f"{raw!r} is not allowed (bytes > 0, or a number with a unit: "
                                             "512MiB, 8GB, 1.5GiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _meta_params(build: Callable[[], Optional[torch.nn.Module]]) -> int:
    """Parameters of the module ``build()`` makes, built on the meta device (nothing allocated);
    0 when it cannot be built there (the bound stays a lower bound)."""
    try:
        with torch.device("meta"):
            module = build()
    except (Exception, SystemExit):  # noqa: BLE001 - an unknown size counts as zero (a plugin's sys.exit too)
        return 0
    return 0 if module is None else sum(p.numel() for p in module.parameters())


@functools.lru_cache(maxsize=4096)
def mixer_params(mtype: str, dim: int, causal: bool, grid: bool, params: tuple) -> int:
    """Parameters of mixer ``mtype`` at width ``dim`` with ``params`` (sorted (name, value) pairs),
    counted on the meta device (no memory used); 0 when it cannot be built."""
    cls = get_mixer(mtype)
    layout = {"grid": grid} if cls.grid_aware else {}
    return _meta_params(lambda: cls(dim, causal=causal, **layout, **dict(params)))


@functools.lru_cache(maxsize=4096)
def _ffn_params(ftype: str, dim: int, ratio: float) -> int:
    return _meta_params(lambda: build_ffn(ftype, dim, ratio))


def _mixer_floor(choice: MixerChoice, dim: int, heads: Optional[int], causal: bool, grid: bool,
                 scale: Scale = UNSCALED) -> Optional[int]:
    """Fewest parameters of the mixer over its valid combinations at ``dim`` (None: none valid),
    scaled as a profile's ``scale`` scales it (width times ``scale.dim``, head counts too)."""
    best = None
    for i, p in enumerate(valid_params(choice, dim, heads)):
        if i >= MAX_COMBOS:
            return 0
        scaled = scaled_params(choice.type, p, scale)
        n = mixer_params(choice.type, dim * scale.dim, causal, grid, tuple(sorted(scaled.items())))
        best = n if best is None else min(best, n)
    return best


def _layer_floor(stage: StageChoices, dim: int, depth: int, causal: bool, grid: bool,
                 scale: Scale = UNSCALED) -> int:
    """Fewest parameters one layer of ``stage`` can have at width ``dim`` and depth ``depth`` (at ``scale``)."""
    heads, width = stage.heads_for(depth), dim * scale.dim
    mixers = [_mixer_floor(m, dim, heads, causal, grid, scale) for m in stage.all_mixers()]
    mixer = min((n for n in mixers if n is not None), default=0)
    ffn = min(_ffn_params(t, width, float(r)) + (0 if t == "none" else 2 * width)  # + its LayerNorm
              for t in stage.ffn_type for r in stage.ffn_ratio)
    return mixer + ffn + 2 * width  # + the mixer's LayerNorm


def _ends_floor(space: Space, si: int, dim: int, io: Optional[TaskIO] = None) -> int:
    """Parameters the stem (first stage) and the head (last stage) add at width ``dim``."""
    io, n = io or space.io, 0
    if si == 0 and io.kind == "tokens":
        n += (io.vocab_size + io.seq_len) * dim  # embedding and learned positions
    if si == len(space.stages) - 1:
        n += dim * io.num_classes + 2 * dim  # head and final LayerNorm
    return n


def _tokens_floor(space: Space, io: Optional[TaskIO] = None) -> int:
    """Fewest tokens the first stage sees, over the stem choices (at ``io``: default the task's)."""
    io = io or space.io
    if io.kind == "tokens":
        return io.seq_len
    sizes = (io.seq_len,) if io.kind == "signal" else io.image_size
    counts = []
    for p in space.stem_patch:
        for stride in space.stem_stride:
            step = stride or p
            n = 1
            for size in sizes:
                n *= max(0, (size - p) // step + 1)
            counts.append(n)
    return min(counts, default=0)


def stage_floors(space: Space, si: int, profile: Optional[Profile] = None) -> dict:
    """{(dim, depth): fewest parameters of stage ``si`` with that width and depth, stem/head
    included}; with ``profile``, of the stage scaled to the profile and built at its input shape."""
    stage = space.stages[si]
    io = space.io if profile is None else profile.task_io(space.io)
    scale = UNSCALED if profile is None else profile.scale
    grid = io.kind == "image"
    return {(d, dp): dp * scale.depth * _layer_floor(stage, d, dp, io.causal, grid, scale)
            + _ends_floor(space, si, d * scale.dim, io) for d in stage.dim for dp in stage.depth}


def space_floor(space: Space) -> int:
    """Fewest parameters any model of the (bound) space has."""
    return sum(min(stage_floors(space, si).values()) for si in range(len(space.stages)))


def profile_floor(space: Space, profile: Profile) -> tuple[int, int]:
    """(parameters, bytes): the fewest any model of ``space`` has, and needs, at ``profile``: its
    float32 weights (every model is built in float32), and on a CPU profile the input and one
    activation of the residual stream at the profile's batch and dtype."""
    params = sum(min(stage_floors(space, si, profile).values()) for si in range(len(space.stages)))
    if profile.device_type == "cuda":
        return params, params * ACT_BYTES
    io, batch, value = profile.task_io(space.io), profile.batch_size, DTYPE_BYTES[profile.dtype]
    inputs = batch * (8 if io.kind == "tokens" else value)  # token ids are int64
    for side in io.input_shape(1)[1:]:
        inputs *= side
    stream = batch * _tokens_floor(space, io) * min(space.stages[0].dim) * profile.scale.dim * value
    return params, params * ACT_BYTES + inputs + stream


def check_profiles(space: Space, available: Optional[int]) -> None:
    """:class:`SettingError` naming the setting of the first deployment profile at which no model
    of the space fits in ``available`` bytes (None: unknown, not checked)."""
    for name, profile in space.profiles.items() if available is not None else ():
        params, need = profile_floor(space, profile)
        if need <= available:
            continue
        why = (f"too large for this machine: the smallest model of this space at profile {name} has at least "
               f"{params:,} parameters and needs at least {size_text(need)}; {size_text(available)} of memory are "
               "available")
        weightiest = _weightiest(space, profile)
        if weightiest is None:
            raise SettingError(f"deploy.{name}", f"is {why}")
        key, value = weightiest
        raise SettingError(f"deploy.{name}.{key}", f"{value} is not allowed ({why})")


def _weightiest(space: Space, p: Profile) -> Optional[tuple[str, object]]:
    """(key, value as written) of the profile setting whose default would shrink the profile's
    floor most; None when every setting is at its default."""
    options = []
    if p.scale.dim > 1:
        options.append(("scale.dim", f"{p.scale.dim}x", replace(p, scale=replace(p.scale, dim=1))))
    if p.scale.depth > 1:
        options.append(("scale.depth", f"{p.scale.depth}x", replace(p, scale=replace(p.scale, depth=1))))
    if p.seq_len is not None:
        options.append(("seq_len", p.seq_len, replace(p, seq_len=None)))
    if p.image_size is not None:
        options.append(("image_size", list(p.image_size), replace(p, image_size=None)))
    if p.batch_size > 1:
        options.append(("batch_size", p.batch_size, replace(p, batch_size=1)))
    if not options:
        return None
    key, value, _ = min(options, key=lambda o: profile_floor(space, o[2])[1])
    return key, value


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def size_text(n: float) -> str:
    """Bytes for a message, in GiB, MiB or KiB (whichever is at least 1)."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n / 2**10:,.1f} KiB"


def check_fits(space: Space, train: TrainConfig, latency: LatencyConfig, available: Optional[int], *,
               profile_devices: bool = True) -> None:
    """:class:`SettingError` naming the first value (a width, a depth, a batch size, the latency
    device, a deployment profile's device unless ``profile_devices`` is False, a profile's scale,
    length or batch) with which no model of the space can run here, given ``available`` bytes of
    memory (None: unknown, not checked)."""
    floors = [stage_floors(space, si) for si in range(len(space.stages))]
    rest = [min(f.values()) for f in floors]
    if latency.device.startswith("cuda"):
        _check_cuda(sum(rest), latency.device, "latency.device")
    for name, profile in space.profiles.items() if profile_devices else ():
        if profile.device_type == "cuda":  # the profile's model is larger still: the bound holds
            _check_cuda(sum(rest), profile.device, f"deploy.{name}.device")
    if available is None:
        return
    have = f"{_gib(available)} of memory are available"
    for si, f in enumerate(floors):
        others = sum(rest) - rest[si]
        for key, values in (("dim", space.stages[si].dim), ("depth", space.stages[si].depth)):
            for v in values:
                n = others + min(p for (d, dp), p in f.items() if (d if key == "dim" else dp) == v)
                if n * TRAIN_BYTES_PER_PARAM > available:
                    raise SettingError(f"arch.stages[{si}].{key}", f"{v} is not allowed (too large for this machine: "
                                       f"any model with it has at least {n:,} parameters, "
                                       f"{_gib(n * TRAIN_BYTES_PER_PARAM)} to train; {have})")
    tokens, width = _tokens_floor(space), min(space.stages[0].dim)
    for key, batch, per_param in (("train.batch_size", train.batch_size, TRAIN_BYTES_PER_PARAM),
                                  ("latency.batch_size", latency.batch_size, ACT_BYTES)):
        need = sum(rest) * per_param + batch * tokens * width * ACT_BYTES
        if need > available:
            raise SettingError(key, f"{batch} is not allowed (too large for this machine: the smallest model "
                                    f"needs at least {_gib(need)} at this batch size; {have})")
    check_profiles(space, available)


def _check_cuda(params: int, device: str, key: str) -> None:
    """Measuring on ``device`` (cuda, cuda:<index>) needs that CUDA device, holding the smallest
    model's weights; :class:`SettingError` naming ``key`` otherwise."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        have = "no CUDA device is available" if not count else f"it has {count} CUDA device(s): cuda:0..cuda:{count - 1}"
        raise SettingError(key, f"{device!r} is not allowed here ({have} on this machine)")
    total = torch.cuda.get_device_properties(index).total_memory
    if params * ACT_BYTES > total:
        raise SettingError(key, f"{device!r} is not allowed here (the smallest model's weights need "
                                f"{_gib(params * ACT_BYTES)}; the GPU has {_gib(total)})")
