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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Union

import yaml

from kernels.registry import UnknownName
from search_spaces.arch import (
    DOWNSAMPLE_TYPES,
    NORM_PLACEMENTS,
)
from search_spaces.deploy_profiles import check_profile_shape, parse_profiles
from search_spaces.failures import first_line
from search_spaces.ffn import list_ffns
from search_spaces.mixer_registry import get_mixer_info
from search_spaces.schema import Check, SettingError, as_mapping, check_keys
from search_spaces.task_io import TaskIO
from search_spaces.unique_keys import load_yaml

__all__ = ["MAX_TRIALS", "Space", "SpaceError", "TaskRef", "count_choices", "load_space", "list_spaces", "parse_space",
           "parse_space_text", "parse_task", "resolve_space", "valid_params", "with_heads", "SPACES_DIR",
           "MixerChoice", "StageChoices", "params_allowed", "CHANCE"]

SPACES_DIR = Path(__file__).parent / "spaces"


class SpaceError(SettingError):
    """A space file is wrong. The message names the file, the key path and what is allowed."""

    def __init__(self, source: str, path: str, message: str):
        super().__init__(path, message)
        self.source = source
        self.args = (f"{source}: {path}: {message}" if path else f"{source}: {message}",)

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):
        return type(self), (self.source, self.path, self.message)


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


@dataclass(frozen=True)
class TaskRef:
    """The task a space is searched on: a registered task name and its parameters."""

    name: str
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Space:
    """A parsed, validated search space; immutable, so one read of a file can be shared by every
    caller. ``raw`` is the YAML mapping as written, ``text`` the file's text (empty when parsed
    from a mapping). ``train`` and ``latency`` are the sections as written; their declarations
    (types, ranges) live with the evaluators that read them (``evaluators.train.TrainConfig``,
    ``evaluators.latency.LatencyConfig``), and ``evaluators.spaces.read_space`` checks them
    together with everything else."""

    name: str
    source: str
    raw: dict
    description: str
    task: TaskRef
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
    text: str = field(default="", repr=False)
    plugins: tuple = field(default=(), repr=False)  # search_spaces.plugins.Plugin, loaded by load_space
    profiles: dict = field(default_factory=dict)  # deploy: {name: search_spaces.deploy_profiles.Profile}
    # floors: {metric: a number, or CHANCE}: what a trial must beat to count on a front; the
    # evaluators check the metric and resolve CHANCE to the task's level (evaluators.spaces)
    floors: dict = field(default_factory=dict)

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
                    ffn = ffn_per ** depth if s.ffn_per_layer else ffn_per
                    for pattern in s.pattern:
                        if pattern == "uniform":
                            layers = _group_choices(s.mixers, dim, heads)
                        elif pattern == "per_layer":
                            layers = _group_choices(s.mixers, dim, heads) ** depth
                        else:
                            exact = False
                            k = {"a_then_b": len(s.split), "interleave": len(s.every), "stripe": 1}[pattern]
                            layers = _group_choices(s.mixers_a, dim, heads) * _group_choices(s.mixers_b, dim, heads) * k
                        stage_total += layers * ffn
            total *= stage_total * len(s.downsample)
        return total, exact

    def bind(self, io: TaskIO) -> "Space":
        """The space bound to the task's I/O, checked against it (a copy: a space is immutable);
        a bound space can be sampled."""
        src = self.source
        for si, s in enumerate(self.stages):
            groups = (("choices", s.mixers), ("a", s.mixers_a), ("b", s.mixers_b))
            for group, m in ((g, m) for g, ms in groups for m in ms):
                info = get_mixer_info(m.type)
                path = f"arch.stages[{si}].mixer.{group}.{m.type}"
                if io.causal and not info.causal:
                    raise SpaceError(src, path, f"{m.type} does not support causal use, and task "
                                                f"{self.task.name!r} is causal")
                if info.needs_2d and io.kind != "image":
                    raise SpaceError(src, path, f"{m.type} needs 2-D tokens; task {self.task.name!r} is {io.kind}")
            for d in s.downsample:
                if d != "none" and (io.per_token or io.causal):
                    raise SpaceError(src, f"arch.stages[{si}].downsample",
                                     f"{d!r} merges tokens; task {self.task.name!r} predicts per token")
        if io.kind == "tokens" and (self.stem_patch != (1,) or self.stem_stride != (0,)):
            raise SpaceError(src, "arch.stem", "a token task uses an embedding stem; remove patch/stride")
        self._check_stem(io, "arch.stem.patch", "")
        for name, profile in self.profiles.items():
            try:
                check_profile_shape(profile, io, self.task.name, f"deploy.{name}")
            except SettingError as e:
                raise SpaceError(src, e.path, e.message) from None
            self._check_stem(profile.task_io(io), f"deploy.{name}", "the stem patch ")
        for stride in self.stem_stride:
            if stride > min(self.stem_patch):
                raise SpaceError(src, "arch.stem.stride", f"{stride} is larger than the smallest patch {min(self.stem_patch)}")
        return replace(self, io=io)


    def _check_stem(self, io: TaskIO, path: str, what: str) -> None:
        """Every stem patch fits the input ``io`` describes (the task's, or a profile's)."""
        limit = io.seq_len if io.kind == "signal" else (min(io.image_size) if io.kind == "image" else 1)
        for p in self.stem_patch:
            if p > limit:
                raise SpaceError(self.source, path, f"{what}{p} is larger than the input ({limit})")


def _param_combos(choice: MixerChoice):
    names = list(choice.params)
    for values in itertools.product(*(choice.params[n] for n in names)):
        yield dict(zip(names, values))


def params_allowed(mtype: str, dim: int, params: dict) -> bool:
    """Whether the registry's rules for the mixer ``mtype`` allow ``params`` at width ``dim``."""
    info = get_mixer_info(mtype)
    return all(rule(dim, params) is None for rule in info.rules)


def with_heads(choice: MixerChoice, heads: Optional[int]) -> MixerChoice:
    """The choice with its head count fixed (width-vs-depth stages set heads from the budget)."""
    if heads is None or "heads" not in choice.params:
        return choice
    return MixerChoice(choice.type, {**choice.params, "heads": (heads,)})


def valid_params(choice: MixerChoice, dim: int, heads: Optional[int] = None):
    """The parameter combinations of ``choice`` that the registry's rules allow at width ``dim``
    (with the head count fixed to ``heads`` in a width-vs-depth stage)."""
    choice = with_heads(choice, heads)
    return (p for p in _param_combos(choice) if params_allowed(choice.type, dim, p))


def _group_choices(group: tuple, dim: int, heads: Optional[int]) -> int:
    """Valid (mixer, parameters) choices of a group of mixer choices at width ``dim``."""
    return sum(count_choices(m, dim, heads) for m in group)


def count_choices(choice: MixerChoice, dim: int, heads: Optional[int] = None) -> int:
    """How many parameter combinations of ``choice`` are valid at width ``dim`` (see :func:`valid_params`)."""
    return sum(1 for _ in valid_params(choice, dim, heads))


# ------------------------------------------------------------------------- parsing
def list_spaces() -> list[str]:
    """Names of the built-in spaces."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def resolve_space(name_or_path: str) -> Path:
    """The file of a built-in space name, or ``name_or_path`` itself when it names a file (or
    ends in .yaml/.yml); :class:`SpaceError` when neither exists."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise SpaceError(str(p), "", "no such file")
        return p
    builtin = SPACES_DIR / f"{name_or_path}.yaml"
    if not builtin.exists():
        raise SpaceError(name_or_path, "", f"unknown space; built-in spaces: {list_spaces()} (or give a path to a .yaml file)")
    return builtin


def _read_text(path: Path, source: str) -> str:
    """The text of a space file, or one :class:`SpaceError` saying why it cannot be read as one
    (a directory, unreadable, binary, not UTF-8)."""
    if path.is_dir():
        raise SpaceError(source, "", "is a directory, not a space file (give a .yaml file)")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SpaceError(source, "", f"cannot be read: {e.strerror or e}") from None
    if b"\0" in data:
        raise SpaceError(source, "", "is a binary file, not a YAML space file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpaceError(source, "", f"is not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}); "
                                     "save the space file as UTF-8") from None


def parse_space_text(text: str, *, source: str = "<space>", default_name: str = "space") -> Space:
    """Parse the YAML text of a space file and validate it (not yet bound to its task)."""
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise SpaceError(source, where, f"invalid YAML: {problem}") from None
    except (ValueError, RecursionError) as e:  # e.g. an int with more digits than Python converts
        raise SpaceError(source, "", f"invalid YAML: {first_line(e)}") from None
    return replace(parse_space(raw, source=source, default_name=default_name), text=text)


TaskIOArg = Union[TaskIO, Callable[[Space], TaskIO]]  # the task's I/O, or how to find it from the space


def load_space(name_or_path: str, *, io: Optional[TaskIOArg] = None, text: Optional[str] = None) -> Space:
    """Load a built-in space by name or a YAML file by path and validate it; bind it to ``io``, its
    task's I/O, when given. The plugins the file names (``plugins:``, paths relative to the file) are
    loaded first. With ``text`` (a study's stored copy of the file) that text is parsed instead,
    named after ``name_or_path``; nothing is read and no plugin is loaded (the study's are).

    A space names a task of the evaluators, which this package does not know: without ``io`` the
    space is parsed and checked but not bound (it can be listed and counted, not sampled);
    :func:`evaluators.load_space` loads it bound to its task, passing down ``io`` as a function
    of the parsed space (``evaluators.spaces.task_io``), so one call parses and binds.
    """
    if text is not None:
        name = Path(str(name_or_path))
        space = parse_space_text(text, source=name.name, default_name=name.stem)
    else:
        path = resolve_space(name_or_path)
        source = path.name if path.parent == SPACES_DIR else str(path)
        text = _read_text(path, source)
        plugins = _load_plugins(text, path.parent, source)
        space = replace(parse_space_text(text, source=source, default_name=path.stem), plugins=tuple(plugins))
    if io is None:
        return space
    return space.bind(io if isinstance(io, TaskIO) else io(space))


def _load_plugins(text: str, base_dir: Path, source: str) -> list:
    """Load the installed plugins and those the file's ``plugins:`` names (before its mixers,
    tasks and metrics are looked up); a plugin that cannot be loaded is a SpaceError naming it."""
    from search_spaces.plugins import PluginError, load_space_plugins

    try:
        raw = load_yaml(text)
    except (yaml.YAMLError, ValueError, RecursionError):
        raw = None  # parse_space_text reports it
    try:
        return load_space_plugins(raw, base_dir)
    except PluginError as e:
        raise SpaceError(source, e.key, e.message) from None


# The space file, declared: its keys, and the type and range of each setting.
TOP_KEYS = {"name", "description", "task", "objectives", "constraints", "floors", "trials", "train", "latency", "arch",
            "ladder",  # train, latency, ladder: declared and checked by the evaluators that read them
            "deploy",  # deployment profiles (search_spaces.deploy_profiles)
            "confirm",  # re-evaluating the front (nas confirm): declared and checked by evaluators.confirmation
            "plugins"}  # loaded (search_spaces.plugins) before the rest is read, by load_space or the study
ARCH_KEYS = {"stem", "norm", "stages"}
STEM_KEYS = {"patch", "stride"}
STAGE_KEYS = {"depth", "dim", "downsample", "mixer", "ffn", "head_budget"}
MIXER_KEYS = {"per_layer", "choices", "pattern", "a", "b", "split", "every"}
FFN_KEYS = {"type", "ratio", "per_layer"}
NAME = Check(str, nonempty=True)
DESCRIPTION = Check(str)
# a study's budget; the bound leaves samplers' seeds room (a sampler is seeded with the seed plus the
# trials so far, below 2**32), so any seed up to 2**32 - 1 - MAX_TRIALS works with any budget
MAX_TRIALS = 10**9
TRIALS = Check(int, low=1, high=MAX_TRIALS)
DIRECTION = Check(str, choices=("maximize", "minimize"))
BOUND = Check(float)
CHANCE = "chance"  # a floor at the task's chance level (evaluators.tasks.Task.chance)
FLOOR = Check(float, what=f"a number, or {CHANCE!r} for the task's chance level")
PATCH, STRIDE = Check(int, low=1), Check(int, low=0)
NORM = Check(str, choices=NORM_PLACEMENTS)
DEPTH, DIM, HEAD_BUDGET, EVERY = Check(int, low=1), Check(int, low=1), Check(int, low=1), Check(int, low=1)
DOWNSAMPLE = Check(str, choices=DOWNSAMPLE_TYPES)
PATTERN = Check(str, choices=PATTERNS)
SPLIT = Check(float, low=0, high=1)
FLAG = Check(bool)
FFN_RATIO = Check(float, above=0)


def _choices(value, path: str, check: Check) -> tuple:
    """A scalar (one fixed value) or a non-empty list (a choice), every element checked."""
    if isinstance(value, list) and not value:
        raise SettingError(path, "empty choice list; give at least one value")
    return tuple(check.coerce(v, path) for v in (value if isinstance(value, list) else [value]))


def parse_space(raw: Any, *, source: str = "<space>", default_name: str = "space") -> Space:
    """Validate the mapping read from a space file and build a :class:`Space` (not yet bound)."""
    try:
        return _parse(raw, source, default_name)
    except SpaceError:
        raise
    except SettingError as e:
        raise SpaceError(source, e.path, e.message) from None


def _parse(raw, source: str, default_name: str) -> Space:
    if not isinstance(raw, dict):
        raise SettingError("", "a space file must be a YAML mapping")
    check_keys(raw, TOP_KEYS, "")
    for key in ("task", "arch"):
        if key not in raw:
            raise SettingError(key, "missing required key")
    for key in ("train", "latency"):  # their settings are checked by evaluators' declarations
        as_mapping(raw.get(key), key)
    stem_patch, stem_stride, norm, stages = _parse_arch(raw["arch"])
    return Space(
        name=NAME.coerce(raw.get("name", default_name), "name"),
        source=source,
        raw=raw,
        description=DESCRIPTION.coerce(raw.get("description") or "", "description").strip(),
        task=parse_task(raw["task"]),
        objectives=_parse_objectives(raw.get("objectives", {"accuracy": "maximize", "latency_ms": "minimize"})),
        constraints=_parse_constraints(raw.get("constraints")),
        floors=_parse_floors(raw.get("floors")),
        trials=TRIALS.coerce(raw.get("trials", 10), "trials"),
        train=dict(raw.get("train") or {}),
        latency=dict(raw.get("latency") or {}),
        stem_patch=stem_patch,
        stem_stride=stem_stride,
        norm=norm,
        stages=stages,
        profiles=parse_profiles(raw.get("deploy"), "deploy"),
    )


def parse_task(task) -> TaskRef:
    """The ``task:`` section of a space file (a name, or ``{name, params}``) as a :class:`TaskRef`."""
    if isinstance(task, str):
        task = {"name": task}
    check_keys(task, {"name", "params"}, "task")
    if "name" not in task:
        raise SettingError("task.name", "missing required key")
    params = as_mapping(task.get("params"), "task.params")
    return TaskRef(NAME.coerce(task["name"], "task.name"), dict(params))


def _parse_objectives(objectives) -> dict:
    if not isinstance(objectives, dict) or not objectives:
        raise SettingError("objectives", "must be a non-empty mapping of metric: maximize|minimize")
    return {k: DIRECTION.coerce(v, f"objectives.{k}") for k, v in objectives.items()}


def _parse_constraints(constraints) -> dict:
    out = {}
    for k, v in as_mapping(constraints, "constraints").items():
        bounds = check_keys(v, {"max", "min"}, f"constraints.{k}")
        if not bounds:
            raise SettingError(f"constraints.{k}", "give a bound: {max: X} or {min: X}")
        out[k] = {b: BOUND.coerce(x, f"constraints.{k}.{b}") for b, x in bounds.items()}
    return out


def _parse_floors(floors) -> dict:
    """``floors:`` as {metric: a number, or CHANCE}; which metrics exist, their direction and the
    task's chance levels are the evaluators' to check."""
    return {k: CHANCE if v == CHANCE else FLOOR.coerce(v, f"floors.{k}")
            for k, v in as_mapping(floors, "floors").items()}


def _parse_arch(arch) -> tuple:
    check_keys(arch, ARCH_KEYS, "arch")
    if arch is None:
        raise SettingError("arch", "must be a mapping with stages")
    stem = check_keys(arch.get("stem"), STEM_KEYS, "arch.stem")
    stem_patch = _choices(stem.get("patch", 1), "arch.stem.patch", PATCH)
    stem_stride = _choices(stem.get("stride", 0), "arch.stem.stride", STRIDE)
    norm = _choices(arch.get("norm", "pre"), "arch.norm", NORM)
    stages_raw = arch.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise SettingError("arch.stages", "must be a non-empty list of stages")
    return stem_patch, stem_stride, norm, tuple(_parse_stage(s, si) for si, s in enumerate(stages_raw))


def _parse_mixer_group(choices, mp: str) -> tuple:
    """{mixer name: {param: value or [choices]}} -> tuple of MixerChoice (defaults filled in)."""
    if not isinstance(choices, dict) or not choices:
        raise SettingError(mp, "must be a non-empty mapping of mixer name: {param: choices}")
    mixers = []
    for mtype, params in choices.items():
        p = f"{mp}.{mtype}"
        try:
            info = get_mixer_info(mtype)
        except UnknownName as e:
            raise SettingError(p, str(e)) from None
        params = params or {}
        if not isinstance(params, dict):
            raise SettingError(p, "must be a mapping of parameter: value or [choices]")
        full = {name: (spec.default,) for name, spec in info.params.items() if name not in params}
        for pname, value in params.items():
            if pname not in info.params:
                raise SettingError(f"{p}.{pname}", f"{mtype} has no such parameter; it takes {sorted(info.params)}")
            full[pname] = _choices(value, f"{p}.{pname}", info.params[pname].as_check())
        mixers.append(MixerChoice(mtype, {k: full[k] for k in sorted(full)}))
    return tuple(mixers)


def _parse_stage(s, si: int) -> StageChoices:
    where = f"arch.stages[{si}]"
    check_keys(s, STAGE_KEYS, where)
    if s is None:
        raise SettingError(where, "must be a mapping with depth, dim and mixer")
    for key in ("depth", "dim", "mixer"):
        if key not in s:
            raise SettingError(f"{where}.{key}", "missing required key")
    depth = _choices(s["depth"], f"{where}.depth", DEPTH)
    dim = _choices(s["dim"], f"{where}.dim", DIM)
    downsample = _choices(s.get("downsample", "none"), f"{where}.downsample", DOWNSAMPLE)
    if si == 0 and downsample != ("none",):
        raise SettingError(f"{where}.downsample", "the first stage cannot downsample; use the stem's stride")
    budget = _head_budget(s, depth, where)
    mixer = _parse_mixer(s["mixer"], f"{where}.mixer")
    _check_widths(mixer, dim, depth, budget, where)
    return StageChoices(depth, dim, downsample, mixer["choices"], mixer["pattern"], **_parse_ffn(s.get("ffn"), where),
                        mixers_a=mixer["a"], mixers_b=mixer["b"], split=mixer["split"], every=mixer["every"],
                        head_budget=budget)


def _head_budget(s: dict, depth: tuple, where: str) -> Optional[int]:
    """A stage's ``head_budget`` (heads shared by its layers), which every depth must divide."""
    if "head_budget" not in s:
        return None
    budget = HEAD_BUDGET.coerce(s["head_budget"], f"{where}.head_budget")
    for d in depth:
        if budget % d:
            raise SettingError(f"{where}.depth", f"{d} does not divide head_budget {budget} "
                                              "(heads per layer = head_budget / depth)")
    return budget


def _parse_ffn(ffn, where: str) -> dict:
    """A stage's ``ffn:`` section as StageChoices' ffn_* fields."""
    ffn = check_keys(ffn, FFN_KEYS, f"{where}.ffn")
    return {"ffn_type": _choices(ffn.get("type", "mlp"), f"{where}.ffn.type", Check(str, choices=tuple(list_ffns()))),
            "ffn_ratio": _choices(ffn.get("ratio", 4), f"{where}.ffn.ratio", FFN_RATIO),
            "ffn_per_layer": FLAG.coerce(ffn.get("per_layer", False), f"{where}.ffn.per_layer")}


def _parse_mixer(mixer, mp: str) -> dict:
    """The ``mixer`` section of a stage: pattern(s), mixer choices and groups a/b."""
    check_keys(mixer, MIXER_KEYS, mp)
    if not mixer:
        raise SettingError(mp, "must be a mapping with choices (or groups a and b with a pattern)")
    per_layer = FLAG.coerce(mixer.get("per_layer", False), f"{mp}.per_layer")
    if per_layer and "pattern" in mixer:
        raise SettingError(f"{mp}.per_layer", "give either per_layer or pattern, not both")
    pattern = _choices(mixer.get("pattern", "per_layer" if per_layer else "uniform"), f"{mp}.pattern", PATTERN)
    a = _parse_mixer_group(mixer["a"], f"{mp}.a") if "a" in mixer else ()
    b = _parse_mixer_group(mixer["b"], f"{mp}.b") if "b" in mixer else ()
    grouped = [p for p in pattern if p in GROUP_PATTERNS]
    if grouped and not (a and b):
        raise SettingError(f"{mp}.{'b' if a else 'a'}", f"patterns {grouped} need mixer groups a and b")
    if "choices" in mixer:
        choices = _parse_mixer_group(mixer["choices"], f"{mp}.choices")
    elif a or b:
        choices = tuple({m.type: m for m in a + b}.values())  # uniform/per_layer draw from a | b
    else:
        raise SettingError(f"{mp}.choices", "missing: give choices (or groups a and b with a pattern)")
    return {"pattern": pattern, "choices": choices, "a": a, "b": b,
            "split": _choices(mixer.get("split", 0.5), f"{mp}.split", SPLIT),
            "every": _choices(mixer.get("every", 2), f"{mp}.every", EVERY)}


def _check_widths(mixer: dict, dims: tuple, depths: tuple, budget: Optional[int], where: str) -> None:
    """Every width must leave at least one valid mixer in each group (heads must divide dim...)."""
    for d in dims:
        for dp in depths:
            heads = None if budget is None else budget // dp
            for name in ("choices", "a", "b"):
                group = mixer[name]
                if group and not any(count_choices(m, d, heads) for m in group):
                    what = f"at dim {d}" + ("" if heads is None else f" with {heads} heads per layer (depth {dp})")
                    raise SettingError(f"{where}.dim", f"no mixer in {where}.mixer.{name} is valid {what} "
                                                    "(e.g. heads must divide dim)")
