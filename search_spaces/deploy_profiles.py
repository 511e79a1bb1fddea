"""Deployment profiles: where a model's cost is measured, as data (a space file's ``deploy:``).

Quality comes from proxy training at the task's shape; cost comes from where the model will run.
A profile names that place: the input shape, the batch, the device, the dtype, the CPU threads,
and a scale that widens and deepens the proxy's architecture while keeping its mixer families and
layout::

    deploy:
      long:
        seq_len: 8192          # tokens / signal samples (image tasks: image_size: 224 or [H, W])
        batch_size: 1
        device: cpu            # cpu | cuda | cuda:<index>
        dtype: float32         # float32 | bfloat16 | float16
        threads: 1             # torch threads while timing on CPU
        scale: {dim: 4x, depth: 1x, heads: scale}
        measure: time          # time | predict: latency_ms@long from block latency tables
        recheck: 0.1           # measure: predict: this fraction of candidates is also timed whole

Every cost metric exists once per profile as ``<metric>@<profile>`` (``latency_ms@long``); the
unsuffixed names keep their meaning: the task's shape under the ``latency:`` section.

API (what the evaluators, the predictor and the CLI build on)::

    space.profiles                      # {name: Profile}, in file order; {} without deploy:
    p = space.profiles["long"]
    p.seq_len, p.image_size, p.batch_size, p.device, p.dtype, p.threads
    p.scale.dim, p.scale.depth, p.scale.heads
    io_p = p.task_io(space.io)          # the task's TaskIO at the profile's shape
    arch_p = scale_arch(arch, p)        # the ArchSpec at the profile's width, depth and heads
    model = profile_model(arch, space.io, p)   # build_model(arch_p, io_p), random weights
    split_metric("latency_ms@long")     # ("latency_ms", "long");  ("params", "") unsuffixed
    metric_name("latency_ms", "long")   # "latency_ms@long";  metric_name(m, "") == m
    key = p.key()                       # JSON of everything that changes a measurement

The scale: ``dim: k`` multiplies every stage's width by the whole factor k; ``depth: m`` repeats
each block m times in place (block i of n becomes blocks i*m .. i*m+m-1, so an a_then_b split
and the share of each family are kept); ``heads: scale`` (the default) multiplies every mixer
parameter the registry marks as a head count (``Param.counts_heads``: heads, kv_heads, q_heads,
noise_heads, MoH's shared and routed heads) by k, keeping each head's width; ``heads: keep``
keeps the proxy's head counts (wider heads). Whole factors keep every registry rule that ties
heads to the width (``heads`` divides ``dim``, ``2 heads`` divides ``dim``...).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Optional

from search_spaces.arch import ArchSpec, BlockSpec, MixerSpec
from search_spaces.mixer_registry import get_mixer_info
from search_spaces.schema import Check, SettingError, as_mapping, check_keys, from_mapping, setting
from search_spaces.task_io import TaskIO

__all__ = ["DTYPES", "HEADS_MODES", "MEASURE_MODES", "PROFILE_KEYS", "Profile", "Scale", "check_profile_shape", "metric_name",
           "parse_profiles", "profile_model", "scale_arch", "scaled_params", "split_metric"]

DTYPES = ("float32", "bfloat16", "float16")
HEADS_MODES = ("scale", "keep")
MEASURE_MODES = ("time", "predict")  # latency_ms@profile: timed whole, or predicted (evaluators.predictor)
SEPARATOR = "@"
NAME = Check(str, pattern=r"[A-Za-z][A-Za-z0-9_-]*", what="a profile name: a letter, then letters, digits, _ or -")
FACTOR_WHAT = "a whole factor >= 1, written 4 or 4x"
SIDE = Check(int, low=1)


@dataclass(frozen=True)
class Scale:
    """How a profile's model differs from the proxy's: width and depth factors, head rule."""

    dim: int = setting(1, low=1, what=FACTOR_WHAT, doc="every stage's width times this")
    depth: int = setting(1, low=1, what=FACTOR_WHAT, doc="each block repeated this many times in place")
    heads: str = setting("scale", choices=HEADS_MODES, doc="scale: head counts times dim; keep: as in the proxy")

    @property
    def identity(self) -> bool:
        return self.dim == 1 and self.depth == 1


@dataclass(frozen=True)
class Profile:
    """One deployment profile (see the module docstring). ``seq_len`` / ``image_size`` None: the
    task's own. ``name`` "" is the implicit profile of a space without ``deploy:``."""

    name: str = ""
    seq_len: Optional[int] = setting(None, kind=int, low=1, optional=True, doc="input length (tokens, signal)")
    image_size: Optional[tuple] = None  # (H, W), image tasks
    batch_size: int = setting(1, low=1)
    device: str = setting("cpu", pattern=r"cpu|cuda(:[0-9]+)?", what="cpu, cuda or cuda:<index>")
    dtype: str = setting("float32", choices=DTYPES)
    threads: int = setting(1, low=1, doc="torch threads while timing (CPU)")
    scale: Scale = field(default_factory=Scale)
    measure: str = setting("time", choices=MEASURE_MODES,
                           doc="latency_ms@profile: time each candidate's model, or predict it from block tables")
    recheck: float = setting(0.1, low=0, high=1, doc="measure: predict: the fraction of candidates also timed whole")

    def task_io(self, io: TaskIO) -> TaskIO:
        """``io`` at the profile's input shape (vocabulary, classes, channels, causality kept)."""
        if self.seq_len is not None:
            io = replace(io, seq_len=self.seq_len)
        if self.image_size is not None:
            io = replace(io, image_size=self.image_size)
        return io

    @property
    def device_type(self) -> str:
        """``cpu`` or ``cuda`` (without the index)."""
        return self.device.split(":")[0]

    def key(self) -> str:
        """Canonical JSON of everything that changes what is measured (the name excluded), so two
        profiles that measure the same thing share table entries."""
        d = asdict(self)
        for how in ("name", *HOW_KEYS):
            d.pop(how)
        return json.dumps(d, sort_keys=True, separators=(",", ":"))


PROFILE_KEYS = {f.name for f in fields(Profile) if f.name != "name"}
HOW_KEYS = ("measure", "recheck")  # how latency is obtained, not what is measured: not in Profile.key()


def split_metric(name: str) -> tuple[str, str]:
    """``"latency_ms@long"`` -> ``("latency_ms", "long")``; an unsuffixed name -> ``(name, "")``."""
    base, _, profile = name.partition(SEPARATOR)
    return base, profile


def metric_name(base: str, profile: str) -> str:
    """The column name of metric ``base`` at ``profile`` ("" is the task's shape: ``base``)."""
    return f"{base}{SEPARATOR}{profile}" if profile else base


def _factor(value):
    """``4``, ``"4x"`` or ``"4X"`` -> 4 (checked by the Scale declarations)."""
    if isinstance(value, str) and value[-1:] in ("x", "X") and value[:-1].isdigit():
        return int(value[:-1])
    return value


def _parse_scale(raw, path: str) -> Scale:
    d = dict(as_mapping(raw, path))
    for key in ("dim", "depth"):
        if key in d:
            d[key] = _factor(d[key])
    return from_mapping(Scale, d, path)


def _parse_image_size(raw, path: str) -> tuple:
    sides = raw if isinstance(raw, list) else [raw, raw]
    if len(sides) != 2:
        raise SettingError(path, f"{raw!r} is not allowed (a side in pixels, or [height, width])")
    return tuple(SIDE.coerce(v, path) for v in sides)


def _parse_profile(name, raw, path: str) -> Profile:
    NAME.coerce(name, path)
    d = dict(check_keys(raw, PROFILE_KEYS, path, "profile setting"))
    scale = _parse_scale(d.pop("scale", None), f"{path}.scale")
    image = d.pop("image_size", None)
    image_size = None if image is None else _parse_image_size(image, f"{path}.image_size")
    if image_size is not None and d.get("seq_len") is not None:
        raise SettingError(f"{path}.image_size", "give seq_len (tokens, signals) or image_size (images), not both")
    return replace(from_mapping(Profile, d, path), name=name, image_size=image_size, scale=scale)


def parse_profiles(raw, path: str = "deploy") -> dict:
    """The ``deploy:`` mapping of a space file -> ``{name: Profile}`` (file order); a
    :class:`SettingError` names ``deploy.<profile>.<key>``. Not yet checked against the task
    (:func:`check_profile_shape` does that once the task's I/O is known)."""
    d = as_mapping(raw, path)
    return {name: _parse_profile(name, spec, f"{path}.{name}") for name, spec in d.items()}


def check_profile_shape(profile: Profile, io: TaskIO, task: str, path: str) -> None:
    """:class:`SettingError` if the profile's shape does not fit the task's kind of input."""
    if io.kind == "image" and profile.seq_len is not None:
        raise SettingError(f"{path}.seq_len", f"{profile.seq_len!r} is not allowed (task {task!r} takes images; "
                                              "give image_size)")
    if io.kind != "image" and profile.image_size is not None:
        raise SettingError(f"{path}.image_size", f"{list(profile.image_size)!r} is not allowed (task {task!r} "
                                                 f"takes {io.kind}; give seq_len)")


def scaled_params(mtype: str, params: dict, scale: Scale) -> dict:
    """Mixer ``mtype``'s parameters ``params`` at ``scale``: under ``heads: scale`` every head
    count (a default one too) times ``scale.dim``; the others as given."""
    if scale.heads == "keep" or scale.dim == 1:
        return dict(params)
    info = get_mixer_info(mtype)
    full = {**info.defaults(), **params}  # a head count left at its default scales too
    return {**params, **{k: v * scale.dim for k, v in full.items() if info.params[k].counts_heads}}


def _scaled_block(block: BlockSpec, scale: Scale) -> BlockSpec:
    params = scaled_params(block.mixer.type, block.mixer.params, scale)
    return block if params == block.mixer.params else replace(block, mixer=MixerSpec(block.mixer.type, params))


def scale_arch(arch: ArchSpec, profile: Profile) -> ArchSpec:
    """``arch`` at the profile's scale: widths times ``scale.dim``, each block repeated
    ``scale.depth`` times in place, head counts times ``scale.dim`` under ``heads: scale``; stem,
    norms, FFN types and ratios, downsampling and causality unchanged. The result is validated
    (:class:`~search_spaces.arch.ArchValidationError` if a plugin mixer's rule breaks)."""
    s = profile.scale
    if s.identity:
        return arch
    stages = tuple(
        replace(stage, dim=stage.dim * s.dim,
                blocks=tuple(_scaled_block(b, s) for b in stage.blocks for _ in range(s.depth)))
        for stage in arch.stages)
    return replace(arch, stages=stages).validate()


def profile_model(arch: ArchSpec, io: TaskIO, profile: Profile):
    """The profile's model: :func:`scale_arch` of ``arch`` built at ``profile.task_io(io)``, with
    the builder's random initialisation (seed it first for a reproducible model), on the CPU in
    float32 (the evaluators move it to the profile's device and dtype)."""
    from search_spaces.builder import build_model

    return build_model(scale_arch(arch, profile), profile.task_io(io))
