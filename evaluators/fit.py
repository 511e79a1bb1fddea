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
as a trial state with its reason.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Optional

import torch

from evaluators.latency import LatencyConfig
from evaluators.train import TrainConfig
from search_spaces.ffn import build_ffn
from search_spaces.mixer_registry import get_mixer
from search_spaces.schema import SettingError
from search_spaces.space import MixerChoice, Space, StageChoices, valid_params

__all__ = ["TRAIN_BYTES_PER_PARAM", "available_memory", "check_fits", "mixer_params", "space_floor"]

TRAIN_BYTES_PER_PARAM = 16  # fp32 weights, gradients, AdamW exp_avg and exp_avg_sq
ACT_BYTES = 4  # fp32 activations
MAX_COMBOS = 256  # parameter combinations tried per mixer; beyond that the mixer counts as zero


def available_memory() -> Optional[int]:
    """Bytes of memory available to new processes (Linux: MemAvailable); None if unknown."""
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


def _mixer_floor(choice: MixerChoice, dim: int, heads: Optional[int], causal: bool, grid: bool) -> Optional[int]:
    """Fewest parameters of the mixer over its valid combinations at ``dim`` (None: none valid)."""
    best = None
    for i, p in enumerate(valid_params(choice, dim, heads)):
        if i >= MAX_COMBOS:
            return 0
        n = mixer_params(choice.type, dim, causal, grid, tuple(sorted(p.items())))
        best = n if best is None else min(best, n)
    return best


def _layer_floor(stage: StageChoices, dim: int, depth: int, causal: bool, grid: bool) -> int:
    """Fewest parameters one layer of ``stage`` can have at width ``dim`` and depth ``depth``."""
    heads = stage.heads_for(depth)
    mixers = [_mixer_floor(m, dim, heads, causal, grid) for m in stage.all_mixers()]
    mixer = min((n for n in mixers if n is not None), default=0)
    ffn = min(_ffn_params(t, dim, float(r)) + (0 if t == "none" else 2 * dim)  # + its LayerNorm
              for t in stage.ffn_type for r in stage.ffn_ratio)
    return mixer + ffn + 2 * dim  # + the mixer's LayerNorm


def _ends_floor(space: Space, si: int, dim: int) -> int:
    """Parameters the stem (first stage) and the head (last stage) add at width ``dim``."""
    io, n = space.io, 0
    if si == 0 and io.kind == "tokens":
        n += (io.vocab_size + io.seq_len) * dim  # embedding and learned positions
    if si == len(space.stages) - 1:
        n += dim * io.num_classes + 2 * dim  # head and final LayerNorm
    return n


def _tokens_floor(space: Space) -> int:
    """Fewest tokens the first stage sees, over the stem choices."""
    io = space.io
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


def stage_floors(space: Space, si: int) -> dict:
    """{(dim, depth): fewest parameters of stage ``si`` with that width and depth, stem/head included}."""
    stage, io = space.stages[si], space.io
    grid = io.kind == "image"
    return {(d, dp): dp * _layer_floor(stage, d, dp, io.causal, grid) + _ends_floor(space, si, d)
            for d in stage.dim for dp in stage.depth}


def space_floor(space: Space) -> int:
    """Fewest parameters any model of the (bound) space has."""
    return sum(min(stage_floors(space, si).values()) for si in range(len(space.stages)))


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_fits(space: Space, train: TrainConfig, latency: LatencyConfig, available: Optional[int], *,
               profile_devices: bool = True) -> None:
    """:class:`SettingError` naming the first value (a width, a depth, a batch size, the latency
    device, a deployment profile's device unless ``profile_devices`` is False) with which no
    model of the space can run here, given ``available`` bytes of memory (None: unknown, not
    checked)."""
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
