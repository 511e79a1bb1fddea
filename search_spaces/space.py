"""Search spaces: YAML files parsed into a :class:`Space` (sampling lives in ``sampling.py``).

A space file holds the task, the objectives, the training/latency budget and the ``arch``
section. In ``arch``, a list is a choice and a scalar is fixed::

    arch:
      stem: {patch: [4, 8], stride: [0, 2]}   # signal/image tasks (0 = stride equal to patch)
      norm: [pre, post]
      stages:
        - depth: [1, 2, 3]
          dim: [32, 64]
          downsample: none                    # or merge | conv (not in the first stage)
          mixer:
            per_layer: true                   # one mixer choice per layer, or one per stage
            choices:
              softmax: {heads: [1, 2, 4]}
              hyena: {filter_dim: [8, 16]}
          ffn: {type: [mlp, glu, none], ratio: [2, 4], per_layer: false}

Structured hybrid patterns over two mixer groups ``a`` (early / local / spectral) and ``b``
(late / global / attention)::

          mixer:
            pattern: [a_then_b, interleave, stripe, uniform]
            a: {gfnet: {}, hyena: {}}
            b: {softmax: {heads: [2, 4]}}
            split: [0.25, 0.5]    # a_then_b: the first round(split * depth) layers are from a
            every: [2, 3]         # interleave: every k-th layer is from b (stripe: a, b, a, b, ...)

Width versus depth at a fixed head budget (Wide Attention): ``head_budget: 16`` with
``depth: [1, 2, 4, 8, 16]`` gives every layer of the stage ``16 / depth`` heads.

Only combinations that pass the registry's rules are offered to the sampler: a parameter whose
valid values depend on earlier choices (heads must divide dim) gets its own conditional name
(``s0.b1.softmax.heads|dim=48``), so Optuna never proposes an impossible architecture.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from search_spaces.arch import (
    DOWNSAMPLE_TYPES,
    NORM_PLACEMENTS,
)
from search_spaces.ffn import list_ffns
from search_spaces.registries import UnknownName
from search_spaces.registry import get_mixer_info
from search_spaces.task_io import TaskIO

__all__ = ["Space", "SpaceError", "load_space", "list_spaces", "parse_space", "SPACES_DIR"]

SPACES_DIR = Path(__file__).parent / "spaces"

TOP_KEYS = {"name", "description", "task", "objectives", "constraints", "trials", "train", "latency", "arch",
            "ladder",  # ladder: validated by evaluators.ladder
            "plugins"}  # loaded (search_spaces.plugins) before the rest is read, by load_space or the study
ARCH_KEYS = {"stem", "norm", "stages"}
STEM_KEYS = {"patch", "stride"}
STAGE_KEYS = {"depth", "dim", "downsample", "mixer", "ffn", "head_budget"}
MIXER_KEYS = {"per_layer", "choices", "pattern", "a", "b", "split", "every"}
FFN_KEYS = {"type", "ratio", "per_layer"}


class SpaceError(ValueError):
    """A space file is wrong. The message names the file, the key path and what is allowed."""

    def __init__(self, source: str, path: str, message: str):
        self.source, self.path = source, path
        where = f"{source}: {path}" if path else source
        super().__init__(f"{where}: {message}")


def _as_choices(value, source, path, kind, *, allowed=None, low=None) -> tuple:
    """Scalar -> (scalar,), list -> tuple; every element checked."""
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        raise SpaceError(source, path, "empty choice list; give at least one value")
    for v in values:
        ok = isinstance(v, kind) and not (kind in (int, float) and isinstance(v, bool))
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            ok = True
        if not ok:
            raise SpaceError(source, path, f"{v!r} must be of type {kind.__name__}")
        if allowed is not None and v not in allowed:
            raise SpaceError(source, path, f"{v!r} is not one of {list(allowed)}")
        if low is not None and v < low:
            raise SpaceError(source, path, f"{v!r} must be >= {low}")
    return tuple(values)


def _check_keys(d, allowed, source, path):
    if not isinstance(d, dict):
        raise SpaceError(source, path, f"expected a mapping, got {type(d).__name__}")
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise SpaceError(source, f"{path}.{unknown[0]}" if path else unknown[0],
                         f"unknown key; allowed: {sorted(allowed)}")


@dataclass(frozen=True)
class MixerChoice:
    type: str
    params: dict  # name -> tuple of choices (complete: registry defaults filled in)


PATTERNS = ("uniform", "per_layer", "a_then_b", "interleave", "stripe")
GROUP_PATTERNS = ("a_then_b", "interleave", "stripe")


@dataclass(frozen=True)
class StageChoices:
    depth: tuple
    dim: tuple
    downsample: tuple
    mixers: tuple  # of MixerChoice: the choices of the uniform / per_layer patterns
    pattern: tuple  # of PATTERNS
    ffn_type: tuple
    ffn_ratio: tuple
    ffn_per_layer: bool
    mixers_a: tuple = ()  # group A (early / local / spectral) of the group patterns
    mixers_b: tuple = ()  # group B (late / global / attention)
    split: tuple = (0.5,)  # a_then_b: fraction of the stage's layers taken from A
    every: tuple = (2,)  # interleave: every k-th layer is from B
    head_budget: Optional[int] = None  # width vs depth: heads per layer = head_budget / depth

    @property
    def per_layer(self) -> bool:
        return self.pattern == ("per_layer",)

    def all_mixers(self) -> tuple:
        return self.mixers + self.mixers_a + self.mixers_b

    def heads_for(self, depth: int) -> Optional[int]:
        return None if self.head_budget is None else self.head_budget // depth


@dataclass
class Space:
    """A parsed, validated search space. ``raw`` is the YAML mapping as written."""

    name: str
    source: str
    raw: dict
    description: str
    task: dict
    objectives: dict
    constraints: dict
    trials: int
    train: dict
    latency: dict
    stem_patch: tuple
    stem_stride: tuple
    norm: tuple
    stages: tuple
    io: Optional[TaskIO] = field(default=None, repr=False)
    plugins: tuple = field(default=(), repr=False)  # search_spaces.plugins.Plugin, loaded by load_space

    # --------------------------------------------------------------- summaries
    def mixer_names(self) -> list[str]:
        return sorted({m.type for s in self.stages for m in s.all_mixers()})

    def count(self) -> tuple[int, bool]:
        """(number of distinct architectures, exact?). Exact for uniform / per-layer stages; for
        group patterns it counts pattern x group choices, an upper bound (some coincide)."""
        total, exact = len(self.stem_patch) * len(self.stem_stride) * len(self.norm), True
        for s in self.stages:
            ffn_per = len(s.ffn_type) * len(s.ffn_ratio)
            stage_total = 0
            for dim in s.dim:
                for depth in s.depth:
                    heads = s.heads_for(depth)
                    n = lambda group: sum(_count_params(m, dim, heads) for m in group)  # noqa: E731
                    ffn = ffn_per ** depth if s.ffn_per_layer else ffn_per
                    for pattern in s.pattern:
                        if pattern == "uniform":
                            layers = n(s.mixers)
                        elif pattern == "per_layer":
                            layers = n(s.mixers) ** depth
                        else:
                            exact = False
                            k = {"a_then_b": len(s.split), "interleave": len(s.every), "stripe": 1}[pattern]
                            layers = n(s.mixers_a) * n(s.mixers_b) * k
                        stage_total += layers * ffn
            total *= stage_total * len(s.downsample)
        return total, exact

    def bind(self, io: TaskIO) -> "Space":
        """Check the space against the task's I/O; afterwards the space can be sampled."""
        src = self.source
        for si, s in enumerate(self.stages):
            groups = (("choices", s.mixers), ("a", s.mixers_a), ("b", s.mixers_b))
            for group, m in ((g, m) for g, ms in groups for m in ms):
                info = get_mixer_info(m.type)
                path = f"arch.stages[{si}].mixer.{group}.{m.type}"
                if io.causal and not info.causal:
                    raise SpaceError(src, path, f"{m.type} does not support causal use, and task "
                                                f"{self.task['name']!r} is causal")
                if info.needs_2d and io.kind != "image":
                    raise SpaceError(src, path, f"{m.type} needs 2-D tokens; task {self.task['name']!r} is {io.kind}")
            for d in s.downsample:
                if d != "none" and (io.per_token or io.causal):
                    raise SpaceError(src, f"arch.stages[{si}].downsample",
                                     f"{d!r} merges tokens; task {self.task['name']!r} predicts per token")
        if io.kind == "tokens" and (self.stem_patch != (1,) or self.stem_stride != (0,)):
            raise SpaceError(src, "arch.stem", "a token task uses an embedding stem; remove patch/stride")
        limit = io.seq_len if io.kind == "signal" else (min(io.image_size) if io.kind == "image" else 1)
        for p in self.stem_patch:
            if p > limit:
                raise SpaceError(src, "arch.stem.patch", f"{p} is larger than the input ({limit})")
        for st in self.stem_stride:
            if st > min(self.stem_patch):
                raise SpaceError(src, "arch.stem.stride", f"{st} is larger than the smallest patch {min(self.stem_patch)}")
        self.io = io
        return self


def _param_combos(choice: MixerChoice):
    names = list(choice.params)
    for values in itertools.product(*(choice.params[n] for n in names)):
        yield dict(zip(names, values))


def _combo_ok(mtype: str, dim: int, params: dict) -> bool:
    info = get_mixer_info(mtype)
    return all(rule(dim, params) is None for rule in info.rules)


def with_heads(choice: MixerChoice, heads: Optional[int]) -> MixerChoice:
    """The choice with its head count fixed (width-vs-depth stages set heads from the budget)."""
    if heads is None or "heads" not in choice.params:
        return choice
    return MixerChoice(choice.type, {**choice.params, "heads": (heads,)})


def _count_params(choice: MixerChoice, dim: int, heads: Optional[int] = None) -> int:
    choice = with_heads(choice, heads)
    return sum(1 for p in _param_combos(choice) if _combo_ok(choice.type, dim, p))


# ------------------------------------------------------------------------- parsing
def list_spaces() -> list[str]:
    """Names of the built-in spaces."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def _resolve(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise SpaceError(str(p), "", "no such file")
        return p
    builtin = SPACES_DIR / f"{name_or_path}.yaml"
    if not builtin.exists():
        raise SpaceError(name_or_path, "", f"unknown space; built-in spaces: {list_spaces()} (or give a path to a .yaml file)")
    return builtin


def load_space(name_or_path: str, *, io: Optional[TaskIO] = None) -> Space:
    """Load a built-in space by name or a YAML file by path; validate it; bind it to its task.

    The task's I/O comes from ``io`` or, by default, from the task registry of ``evaluators``.
    The plugins the file names (``plugins:``, paths relative to the file) are loaded first.
    """
    path = _resolve(name_or_path)
    source = path.name if path.parent == SPACES_DIR else str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpaceError(source, where, f"invalid YAML: {getattr(e, 'problem', e)}") from None
    plugins = _load_plugins(raw, path.parent, source)
    space = parse_space(raw, source=source, default_name=path.stem)
    space.plugins = tuple(plugins)
    if io is None:
        from evaluators.tasks import task_io_for  # the task registry lives with the evaluators

        try:
            io = task_io_for(space.task["name"], space.task.get("params", {}))
        except (KeyError, ValueError, TypeError) as e:
            msg = e.args[0] if e.args else str(e)
            raise SpaceError(source, "task", str(msg)) from None
    return space.bind(io)


def _load_plugins(raw, base_dir: Path, source: str) -> list:
    """Load the installed plugins and those the file's ``plugins:`` names (before its mixers,
    tasks and metrics are looked up); a plugin that cannot be loaded is a SpaceError naming it."""
    from search_spaces.plugins import PluginError, load_space_plugins

    try:
        return load_space_plugins(raw, base_dir)
    except PluginError as e:
        raise SpaceError(source, e.key, e.message) from None


def parse_space(raw: Any, *, source: str = "<space>", default_name: str = "space") -> Space:
    """Validate the mapping read from a space file and build a :class:`Space` (not yet bound)."""
    if not isinstance(raw, dict):
        raise SpaceError(source, "", "a space file must be a YAML mapping")
    _check_keys(raw, TOP_KEYS, source, "")
    for key in ("task", "arch"):
        if key not in raw:
            raise SpaceError(source, key, "missing required key")
    task = raw["task"]
    if isinstance(task, str):
        task = {"name": task, "params": {}}
    _check_keys(task, {"name", "params"}, source, "task")
    if not isinstance(task.get("name"), str):
        raise SpaceError(source, "task.name", "missing or not a string")
    if not isinstance(task.get("params", {}) or {}, dict):
        raise SpaceError(source, "task.params", "must be a mapping")
    task = {"name": task["name"], "params": dict(task.get("params") or {})}

    objectives = raw.get("objectives", {"accuracy": "maximize", "latency_ms": "minimize"})
    if not isinstance(objectives, dict) or not objectives:
        raise SpaceError(source, "objectives", "must be a non-empty mapping of metric: maximize|minimize")
    for k, v in objectives.items():
        if v not in ("maximize", "minimize"):
            raise SpaceError(source, f"objectives.{k}", f"{v!r} is not one of ['maximize', 'minimize']")
    constraints = raw.get("constraints", {}) or {}
    if not isinstance(constraints, dict):
        raise SpaceError(source, "constraints", "must be a mapping of metric: {max: X} or {min: X}")
    for k, v in constraints.items():
        _check_keys(v, {"max", "min"}, source, f"constraints.{k}")
        for bound, x in list(v.items()):
            if isinstance(x, str):  # YAML 1.1 reads 2e6 as text
                try:
                    v[bound] = x = float(x)
                except ValueError:
                    pass
            if not isinstance(x, (int, float)) or isinstance(x, bool):
                raise SpaceError(source, f"constraints.{k}.{bound}", f"{x!r} must be a number")
    trials = raw.get("trials", 10)
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise SpaceError(source, "trials", f"{trials!r} must be an integer >= 1")
    for key in ("train", "latency"):
        if not isinstance(raw.get(key, {}) or {}, dict):
            raise SpaceError(source, key, "must be a mapping")

    arch = raw["arch"]
    _check_keys(arch, ARCH_KEYS, source, "arch")
    stem = arch.get("stem", {}) or {}
    _check_keys(stem, STEM_KEYS, source, "arch.stem")
    stem_patch = _as_choices(stem.get("patch", 1), source, "arch.stem.patch", int, low=1)
    stem_stride = _as_choices(stem.get("stride", 0), source, "arch.stem.stride", int, low=0)
    norm = _as_choices(arch.get("norm", "pre"), source, "arch.norm", str, allowed=NORM_PLACEMENTS)
    stages_raw = arch.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise SpaceError(source, "arch.stages", "must be a non-empty list of stages")
    stages = tuple(_parse_stage(s, si, source) for si, s in enumerate(stages_raw))
    return Space(
        name=raw.get("name", default_name),
        source=source,
        raw=raw,
        description=str(raw.get("description", "")).strip(),
        task=task,
        objectives=dict(objectives),
        constraints=dict(constraints),
        trials=trials,
        train=dict(raw.get("train") or {}),
        latency=dict(raw.get("latency") or {}),
        stem_patch=stem_patch,
        stem_stride=stem_stride,
        norm=norm,
        stages=stages,
    )


def _parse_mixer_group(choices, source: str, mp: str) -> tuple:
    """{mixer name: {param: value or [choices]}} -> tuple of MixerChoice (defaults filled in)."""
    if not isinstance(choices, dict) or not choices:
        raise SpaceError(source, mp, "must be a non-empty mapping of mixer name: {param: choices}")
    mixers = []
    for mtype, params in choices.items():
        p = f"{mp}.{mtype}"
        try:
            info = get_mixer_info(mtype)
        except UnknownName as e:
            raise SpaceError(source, p, str(e)) from None
        params = params or {}
        if not isinstance(params, dict):
            raise SpaceError(source, p, "must be a mapping of parameter: value or [choices]")
        full = {name: (spec.default,) for name, spec in info.params.items() if name not in params}
        for pname, value in params.items():
            if pname not in info.params:
                raise SpaceError(source, f"{p}.{pname}", f"{mtype} has no such parameter; it takes {sorted(info.params)}")
            vals = value if isinstance(value, list) else [value]
            if isinstance(value, list) and not value:
                raise SpaceError(source, f"{p}.{pname}", "empty choice list; give at least one value")
            for v in vals:
                err = info.params[pname].check(v)
                if err:
                    raise SpaceError(source, f"{p}.{pname}", err)
            full[pname] = tuple(vals)
        mixers.append(MixerChoice(mtype, {k: full[k] for k in sorted(full)}))
    return tuple(mixers)


def _parse_stage(s, si: int, source: str) -> StageChoices:
    sp = f"arch.stages[{si}]"
    _check_keys(s, STAGE_KEYS, source, sp)
    for key in ("depth", "dim", "mixer"):
        if key not in s:
            raise SpaceError(source, f"{sp}.{key}", "missing required key")
    depth = _as_choices(s["depth"], source, f"{sp}.depth", int, low=1)
    dim = _as_choices(s["dim"], source, f"{sp}.dim", int, low=1)
    downsample = _as_choices(s.get("downsample", "none"), source, f"{sp}.downsample", str, allowed=DOWNSAMPLE_TYPES)
    if si == 0 and downsample != ("none",):
        raise SpaceError(source, f"{sp}.downsample", "the first stage cannot downsample; use the stem's stride")
    budget = s.get("head_budget")
    if budget is not None:
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
            raise SpaceError(source, f"{sp}.head_budget", f"{budget!r} must be an integer >= 1")
        for d in depth:
            if budget % d:
                raise SpaceError(source, f"{sp}.depth", f"{d} does not divide head_budget {budget} "
                                                        "(heads per layer = head_budget / depth)")
    mixer = s["mixer"]
    mp = f"{sp}.mixer"
    _check_keys(mixer, MIXER_KEYS, source, mp)
    per_layer = mixer.get("per_layer", False)
    if not isinstance(per_layer, bool):
        raise SpaceError(source, f"{mp}.per_layer", f"{per_layer!r} must be true or false")
    default_pattern = "per_layer" if per_layer else "uniform"
    if per_layer and "pattern" in mixer:
        raise SpaceError(source, f"{mp}.per_layer", "give either per_layer or pattern, not both")
    pattern = _as_choices(mixer.get("pattern", default_pattern), source, f"{mp}.pattern", str, allowed=PATTERNS)
    grouped = any(p in GROUP_PATTERNS for p in pattern)
    mixers_a = _parse_mixer_group(mixer["a"], source, f"{mp}.a") if "a" in mixer else ()
    mixers_b = _parse_mixer_group(mixer["b"], source, f"{mp}.b") if "b" in mixer else ()
    if grouped and not (mixers_a and mixers_b):
        raise SpaceError(source, f"{mp}.{'b' if mixers_a else 'a'}",
                         f"patterns {[p for p in pattern if p in GROUP_PATTERNS]} need mixer groups a and b")
    if "choices" in mixer:
        mixers = _parse_mixer_group(mixer["choices"], source, f"{mp}.choices")
    elif mixers_a or mixers_b:
        mixers = tuple({m.type: m for m in mixers_a + mixers_b}.values())  # uniform/per_layer draw from a | b
    else:
        raise SpaceError(source, f"{mp}.choices", "missing: give choices (or groups a and b with a pattern)")
    split = _as_choices(mixer.get("split", 0.5), source, f"{mp}.split", float)
    if any(not 0 <= f <= 1 for f in split):
        raise SpaceError(source, f"{mp}.split", "fractions must be in [0, 1]")
    every = _as_choices(mixer.get("every", 2), source, f"{mp}.every", int, low=1)
    for d in dim:
        for dp in depth:
            heads = None if budget is None else budget // dp
            for group, name in ((mixers, "choices"), (mixers_a, "a"), (mixers_b, "b")):
                if group and not any(_count_params(m, d, heads) for m in group):
                    what = f"at dim {d}" + ("" if heads is None else f" with {heads} heads per layer (depth {dp})")
                    raise SpaceError(source, f"{sp}.dim", f"no mixer in {mp}.{name} is valid {what} "
                                                          "(e.g. heads must divide dim)")
    ffn = s.get("ffn", {}) or {}
    _check_keys(ffn, FFN_KEYS, source, f"{sp}.ffn")
    ffn_type = _as_choices(ffn.get("type", "mlp"), source, f"{sp}.ffn.type", str, allowed=tuple(list_ffns()))
    ffn_ratio = _as_choices(ffn.get("ratio", 4), source, f"{sp}.ffn.ratio", float)
    if any(r <= 0 for r in ffn_ratio):
        raise SpaceError(source, f"{sp}.ffn.ratio", "ratios must be > 0")
    ffn_per_layer = ffn.get("per_layer", False)
    if not isinstance(ffn_per_layer, bool):
        raise SpaceError(source, f"{sp}.ffn.per_layer", f"{ffn_per_layer!r} must be true or false")
    return StageChoices(depth, dim, downsample, mixers, pattern, ffn_type, ffn_ratio, ffn_per_layer,
                        mixers_a, mixers_b, split, every, budget)
