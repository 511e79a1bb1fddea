"""Reference designs from the literature, sized to a search space, to put on the Pareto front.

Each design is a small function of the space (its task I/O and its choices) returning an ArchSpec,
or raising :class:`Skip` with the reason the task cannot take it. Sizing: every stage of the space
keeps its place, with the middle of its depth, width and downsampling choices (the upper middle of
an even list) and the middle of its FFN ratio choices; mixer parameters are the middle of the
space's choices for that mixer where the space offers it, else the registry's defaults, then the
nearest value the registry's rules allow at that width (heads must divide the width, ...).
Hybrid designs need two layers: if the middle depth gives one, the last stage gets a second.

    transformer     plain multi-head softmax attention in every layer, MLP FFN
    shvit           SHViT: single-head attention over a fraction of the channels; a depthwise conv
                    mixer in the early layers of signal/image tasks (SHViT's conv stages)
    spectformer     SpectFormer: spectral (GFNet global filter) layers first, softmax attention
                    after; non-causal tasks only (an FFT over tokens sees the future)
    hyena           Hyena in every layer (the 2-D operator for image tasks)
    striped_hyena   StripedHyena-style hybrid: Hyena and softmax attention layers alternating,
                    starting with Hyena

``enqueue_baselines(study, space)`` queues each design as a trial with user attrs ``fixed_arch``
(evaluated as given, see nas/engine/objective.py) and ``baseline`` (its name, the ``baseline`` column of
:func:`nas.load_trials`); designs already in the study are not queued again.
"""

from __future__ import annotations

from typing import Callable, Optional

from nas.store.trial_attrs import BASELINE_KEY, FIXED_ARCH_KEY
from search_spaces import ArchSpec, get_mixer_info
from search_spaces.arch import BlockSpec, FFNSpec, MixerSpec, StageSpec, StemSpec
from search_spaces.task_io import STEM_FOR_KIND

__all__ = ["BASELINES", "Skip", "baseline_archs", "enqueue_baselines"]


class Skip(Exception):
    """The task cannot take this design (the message says why)."""


def _middle(choices):
    choices = sorted(choices)
    return choices[len(choices) // 2]


def _rules_ok(mtype: str, dim: int, params: dict) -> bool:
    info = get_mixer_info(mtype)
    full = {**info.defaults(), **params}
    return all(rule(dim, full) is None for rule in info.rules)


def _mixer(space, mtype: str, dim: int, **fixed) -> MixerSpec:
    """``mtype`` with the space's middle parameter choices (or defaults), made valid at ``dim``."""
    info = get_mixer_info(mtype)
    offered = {m.type: m for s in space.stages for m in s.all_mixers()}
    params = dict(fixed)
    if mtype in offered:
        for name, values in offered[mtype].params.items():
            params.setdefault(name, _middle(values))
    if not _rules_ok(mtype, dim, params):
        # try each parameter's allowed values, nearest to the wanted one first
        for name, p in info.params.items():
            if name in fixed or p.choices is None and p.kind is not int:
                continue
            want = params.get(name, p.default)
            cands = list(p.choices) if p.choices else [v for v in range(1, dim + 1)]
            cands = sorted(cands, key=lambda v: (abs(v - want) if isinstance(v, (int, float)) else 0, v))
            for v in cands:
                if _rules_ok(mtype, dim, {**params, name: v}):
                    params[name] = v
                    break
            if _rules_ok(mtype, dim, params):
                break
    if not _rules_ok(mtype, dim, params):
        raise Skip(f"no valid {mtype} parameters at width {dim}")
    defaults = info.defaults()
    return MixerSpec(mtype, {k: v for k, v in params.items() if v != defaults.get(k)})


def _layout(space, min_depth: int = 1):
    """[(dim, downsample, depth, ffn_ratio)] per stage, from the middle of the space's choices."""
    out = []
    for s in space.stages:
        out.append([_middle(s.dim), _middle(s.downsample), _middle(s.depth), float(_middle(s.ffn_ratio))])
    if sum(stage[2] for stage in out) < min_depth:
        out[-1][2] += min_depth - sum(stage[2] for stage in out)
    return out


def _build(space, mixer_for: Callable[[int, int, int], MixerSpec], min_depth: int = 1,
           ffn_type: str = "mlp") -> ArchSpec:
    """``mixer_for(layer_index, n_layers, dim)`` picks each layer's mixer (layer index over the
    whole model)."""
    io = space.io
    layout = _layout(space, min_depth)
    n_layers = sum(stage[2] for stage in layout)
    stem_type = STEM_FOR_KIND[io.kind]
    patch = 1 if stem_type == "embed" else _middle(space.stem_patch)
    stages, layer = [], 0
    norm = space.norm[0]
    for dim, downsample, depth, ratio in layout:
        blocks = []
        for _ in range(depth):
            blocks.append(BlockSpec(mixer=mixer_for(layer, n_layers, dim), ffn=FFNSpec(ffn_type, ratio), norm=norm))
            layer += 1
        stages.append(StageSpec(dim=dim, blocks=tuple(blocks), downsample=downsample))
    arch = ArchSpec(stem=StemSpec(stem_type, patch, 0), stages=tuple(stages), causal=io.causal)
    return arch.validate()


def _hyena_type(space) -> str:
    return "hyena2d" if space.io.kind == "image" else "hyena"


def transformer(space) -> ArchSpec:
    return _build(space, lambda i, n, dim: _mixer(space, "softmax", dim))


def shvit(space) -> ArchSpec:
    early_conv = space.io.kind in ("signal", "image")

    def pick(i, n, dim):
        if early_conv and i < n // 2:
            return _mixer(space, "conv", dim)
        return _mixer(space, "single_head", dim)

    return _build(space, pick, min_depth=2 if early_conv else 1)


def spectformer(space) -> ArchSpec:
    if space.io.causal:
        raise Skip("spectral mixers (gfnet/fnet) see the whole sequence; the task is causal")
    return _build(space, lambda i, n, dim: _mixer(space, "gfnet" if i < n // 2 else "softmax", dim), min_depth=2)


def hyena(space) -> ArchSpec:
    return _build(space, lambda i, n, dim: _mixer(space, _hyena_type(space), dim))


def striped_hyena(space) -> ArchSpec:
    return _build(space, lambda i, n, dim: _mixer(space, _hyena_type(space) if i % 2 == 0 else "softmax", dim),
                  min_depth=2)


BASELINES: dict[str, Callable] = {
    "transformer": transformer,
    "shvit": shvit,
    "spectformer": spectformer,
    "hyena": hyena,
    "striped_hyena": striped_hyena,
}


def baseline_archs(space) -> tuple[dict[str, ArchSpec], dict[str, str]]:
    """(name -> ArchSpec for every design the space's task can take, name -> reason for the rest)."""
    if space.io is None:
        raise ValueError(f"space {space.name!r} is not bound to a task; load it with evaluators.load_space()")
    archs, skipped = {}, {}
    for name, design in BASELINES.items():
        try:
            archs[name] = design(space)
        except Skip as e:
            skipped[name] = str(e)
    return archs, skipped


def enqueue_baselines(study, space, log: Optional[Callable[[str], None]] = None) -> list[str]:
    """Queue every design the task can take as a fixed-architecture trial of ``study``; returns
    the names queued. Designs already in the study (by ``baseline`` user attr) are not queued
    again, so a resumed search does not repeat them. Skipped designs are reported through ``log``."""
    archs, skipped = baseline_archs(space)
    for name, reason in skipped.items():
        if log:
            log(f"baseline {name} skipped: {reason}")
    present = {t.user_attrs.get(BASELINE_KEY) for t in study.get_trials(deepcopy=False)}
    queued = []
    for name, arch in archs.items():
        if name in present:
            continue
        study.enqueue_trial({}, user_attrs={FIXED_ARCH_KEY: arch.to_json(), BASELINE_KEY: name})
        queued.append(name)
    return queued
