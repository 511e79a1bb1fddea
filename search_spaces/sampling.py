"""Define-by-run sampling of an ArchSpec from a :class:`Space` with an Optuna trial.

Parameter names: ``stem.patch``, ``norm``, ``s{i}.depth``, ``s{i}.dim``, ``s{i}.pattern``,
``s{i}.mixer`` (uniform) / ``s{i}.b{j}.mixer`` (per layer) / ``s{i}.a.mixer`` and ``s{i}.b.mixer``
(group patterns), mixer parameters under the same prefix (``s0.b1.softmax.heads``), FFN choices.
A fixed value (one choice) is not a parameter.
"""

from __future__ import annotations

import itertools

from search_spaces.arch import ArchSpec, BlockSpec, FFNSpec, MixerSpec, StageSpec, StemSpec
from search_spaces.mixer_registry import get_mixer_info
from search_spaces.space import Space, StageChoices, count_choices, params_allowed, with_heads
from search_spaces.task_io import STEM_FOR_KIND

__all__ = ["sample", "layer_groups"]


def _suggest(trial, name: str, choices: tuple, full: tuple | None = None, context: str = ""):
    """Categorical suggestion; a fixed value is not a parameter. If ``choices`` is a filtered
    subset of ``full`` the parameter gets a conditional name, so its distribution never changes."""
    if len(choices) == 1 and (full is None or len(full) == 1):
        return choices[0]
    if full is not None and tuple(choices) != tuple(full):
        name = f"{name}|{context}"
        if len(choices) == 1:
            return choices[0]
    return trial.suggest_categorical(name, list(choices))


def _sample_mixer(trial, prefix: str, group: tuple, dim: int, heads) -> MixerSpec:
    group = tuple(with_heads(m, heads) for m in group)
    viable = tuple(m for m in group if count_choices(m, dim))
    ctx0 = f"dim={dim}" + ("" if heads is None else f",heads={heads}")
    mtype = _suggest(trial, f"{prefix}.mixer", tuple(m.type for m in viable), tuple(m.type for m in group), ctx0)
    choice = next(m for m in viable if m.type == mtype)
    chosen: dict = {}
    names = list(choice.params)
    for i, pname in enumerate(names):
        rest = names[i + 1 :]
        ok = []
        for v in choice.params[pname]:
            for tail in itertools.product(*(choice.params[r] for r in rest)):
                if params_allowed(mtype, dim, {**chosen, pname: v, **dict(zip(rest, tail))}):
                    ok.append(v)
                    break
        ctx = ",".join([ctx0] + [f"{k}={val}" for k, val in chosen.items()])
        chosen[pname] = _suggest(trial, f"{prefix}.{mtype}.{pname}", tuple(ok), choice.params[pname], ctx)
    defaults = get_mixer_info(mtype).defaults()
    # keep only non-default values, so equal architectures hash equally however they were written
    return MixerSpec(mtype, {k: v for k, v in chosen.items() if v != defaults.get(k)})


def layer_groups(pattern: str, depth: int, split: float = 0.5, every: int = 2) -> list[str]:
    """Which group ("a" or "b") each layer of a stage takes under a structured pattern."""
    if pattern == "a_then_b":
        n_a = min(depth, max(0, round(split * depth)))
        if depth >= 2 and 0 < split < 1:
            n_a = min(depth - 1, max(1, n_a))  # both groups present when the stage has room
        return ["a"] * n_a + ["b"] * (depth - n_a)
    if pattern == "stripe":
        every = 2
    if pattern in ("interleave", "stripe"):
        return ["b" if (i + 1) % every == 0 else "a" for i in range(depth)]
    raise ValueError(f"{pattern!r} is not a group pattern")


def _sample_stage_mixers(trial, si: int, stage: StageChoices, depth: int, dim: int) -> list[MixerSpec]:
    heads = stage.heads_for(depth)
    pattern = _suggest(trial, f"s{si}.pattern", stage.pattern)
    if pattern == "uniform":
        return [_sample_mixer(trial, f"s{si}", stage.mixers, dim, heads)] * depth
    if pattern == "per_layer":
        return [_sample_mixer(trial, f"s{si}.b{bi}", stage.mixers, dim, heads) for bi in range(depth)]
    split = _suggest(trial, f"s{si}.split", stage.split) if pattern == "a_then_b" else 0.5
    every = _suggest(trial, f"s{si}.every", stage.every) if pattern == "interleave" else 2
    layout = layer_groups(pattern, depth, split, every)
    chosen = {}
    for g, group in (("a", stage.mixers_a), ("b", stage.mixers_b)):
        if g in layout:
            chosen[g] = _sample_mixer(trial, f"s{si}.{g}", group, dim, heads)
    return [chosen[g] for g in layout]


def sample(space: Space, trial) -> ArchSpec:
    """Sample one architecture with Optuna's define-by-run API; the result is validated."""
    if space.io is None:
        raise ValueError(f"space {space.name!r} is not bound to a task; load it with evaluators.load_space() "
                         f"(or search_spaces.load_space(..., io=...))")
    io = space.io
    stem_type = STEM_FOR_KIND[io.kind]
    patch = _suggest(trial, "stem.patch", space.stem_patch) if stem_type != "embed" else 1
    stride = _suggest(trial, "stem.stride", space.stem_stride) if stem_type != "embed" else 0
    if stride >= patch:
        stride = 0  # equal to patch: one canonical spelling
    norm = _suggest(trial, "norm", space.norm)
    stages = []
    for si, stage in enumerate(space.stages):
        depth = _suggest(trial, f"s{si}.depth", stage.depth)
        dim = _suggest(trial, f"s{si}.dim", stage.dim)
        downsample = _suggest(trial, f"s{si}.downsample", stage.downsample)
        mixers = _sample_stage_mixers(trial, si, stage, depth, dim)
        shared_ffn = None
        if not stage.ffn_per_layer:
            shared_ffn = FFNSpec(_suggest(trial, f"s{si}.ffn", stage.ffn_type),
                                 float(_suggest(trial, f"s{si}.ffn_ratio", stage.ffn_ratio)))
        blocks = []
        for bi, mixer in enumerate(mixers):
            ffn = shared_ffn or FFNSpec(_suggest(trial, f"s{si}.b{bi}.ffn", stage.ffn_type),
                                        float(_suggest(trial, f"s{si}.b{bi}.ffn_ratio", stage.ffn_ratio)))
            if ffn.type == "none":
                ffn = FFNSpec("none", 1.0)  # the ratio means nothing without an FFN
            blocks.append(BlockSpec(mixer=mixer, ffn=ffn, norm=norm))
        stages.append(StageSpec(dim=dim, blocks=tuple(blocks), downsample=downsample))
    arch = ArchSpec(stem=StemSpec(stem_type, patch, stride), stages=tuple(stages), causal=io.causal)
    return arch.validate()
