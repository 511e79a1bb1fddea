"""A weight-sharing supernet over a search space (one-shot NAS: HAT, AutoFormer, Once-for-All).

Every layer position up to a stage's largest depth holds each mixer the stage allows and each
FFN choice, plus the two LayerNorms of the block; the stem, the transitions between stages and
the head are held once (per transition kind). Each is a set of shared tensors, one per parameter,
shaped for the largest architecture that uses it; widths, head counts, ratios and kernel sizes
take slices of it (:mod:`search_spaces.supernet_slicing` says how, per mixer family, and which
mixers keep one copy per width instead).

An architecture the space can sample maps to exactly one path (:meth:`Supernet.path_for`): for
each parameter of the stand-alone model ``build_model(arch, io)``, the shared tensor it is cut
from and how. A path runs the stand-alone model's own code with those slices as its weights
(``torch.func.functional_call``), so its output is the stand-alone model's by construction, and
gradients flow into the shared tensors. :meth:`Supernet.extract` returns that stand-alone model
with the slices copied in.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
from torch.func import functional_call

from search_spaces.arch import ArchSpec, BlockSpec, FFNSpec, MixerSpec, StageSpec, StemSpec
from search_spaces.builder import NASModel, build_model, check_compatible
from search_spaces.ffn import build_ffn
from search_spaces.mixer_registry import get_mixer
from search_spaces.space import Space, valid_params
from search_spaces.supernet_slicing import PER_WIDTH, axis_plan, gather, rule_for, scatter
from search_spaces.task_io import STEM_FOR_KIND

__all__ = ["Supernet", "SupernetPath", "TEMPLATE_SEED"]

TEMPLATE_SEED = 0  # templates are built under their own RNG, so building one never moves the caller's
_CACHE = 32  # paths (and their templates) kept


@dataclass(frozen=True)
class SupernetPath:
    """One architecture's place in a supernet: per parameter of its stand-alone model, the shared
    tensor's key and the slicing plan (:func:`search_spaces.supernet_slicing.axis_plan`)."""

    arch: ArchSpec
    entries: tuple  # of (parameter name, shared key, plan)

    def keys(self) -> set:
        return {key for _, key, _ in self.entries}


@dataclass
class _Part:
    """A module some path contains (a mixer at one width, an FFN, a norm, the frame around the
    blocks), built on demand, and the shared key of each of its parameters."""

    build: Callable[[], nn.Module]
    keys: dict  # parameter name -> shared key
    inner: dict  # parameter name -> its name inside the component (what the slicing rules name)
    width: int = 0  # a block component's width (its stacked parts are cut at it)
    arch: ArchSpec | None = None  # a frame probe's architecture (its widths, for the same)
    shapes: dict | None = None  # parameter name -> shape (built on the meta device once)

    def __post_init__(self):
        if self.shapes is None:
            self.shapes = {n: s for n, s in _named_shapes(self.build).items() if n in self.keys}

    @property
    def numel(self) -> int:
        return sum(_numel(s) for s in self.shapes.values())


def _key(*parts) -> str:
    return "/".join(str(p).replace(".", "/") for p in parts)


def _mixer_group(mtype: str, dim: int) -> str:
    return f"{mtype}@{dim}" if mtype in PER_WIDTH else mtype


class Supernet(nn.Module):
    """The supernet of a bound space (``space.io`` set). Build it after ``torch.manual_seed`` for a
    seeded initialisation: each shared tensor starts as the initialisation of the largest module
    under it (smaller ones fill what it does not cover)."""

    def __init__(self, space: Space):
        super().__init__()
        if space.io is None:
            raise ValueError(f"space {space.name!r} is not bound to a task; a supernet needs its I/O")
        self.space, self.io = space, space.io
        self.grid = self.io.kind == "image"
        parts = [p for si in range(len(space.stages)) for p in self._stage_parts(si)] + self._frame_parts()
        shapes = self._shapes(parts)
        self.weights = nn.ParameterDict({k: nn.Parameter(torch.zeros(s)) for k, s in sorted(shapes.items())})
        self._initialise(parts)
        self._paths: OrderedDict = OrderedDict()

    # ------------------------------------------------------------------ what it holds
    def _stage_parts(self, si: int) -> list:
        """Every mixer, FFN and norm a layer of stage ``si`` can hold, at every position."""
        stage, causal = self.space.stages[si], self.io.causal
        heads = sorted({stage.heads_for(d) for d in stage.depth}, key=str)
        mixers = {m.type: m for m in stage.all_mixers()}.values()
        local = []  # (build, where in the position, width)
        for dim in stage.dim:
            for choice, h in itertools.product(mixers, heads):
                for params in valid_params(choice, dim, h):
                    build = self._mixer_builder(choice.type, dim, causal, params)
                    local.append((build, ("mixer", _mixer_group(choice.type, dim)), dim))
            for ftype, ratio in itertools.product(stage.ffn_type, stage.ffn_ratio):
                local.append((lambda f=ftype, d=dim, r=float(ratio): build_ffn(f, d, r), ("ffn", ftype), dim))
            for norm in ("norm1", "norm2"):
                local.append((lambda d=dim: nn.LayerNorm(d), (norm,), dim))
        local = [(build, where, width, _named_shapes(build)) for build, where, width in local]
        parts = []
        for bi in range(max(stage.depth)):
            for build, where, width, shapes in local:
                parts.append(_Part(build, {n: _key(f"s{si}", f"b{bi}", *where, n) for n in shapes},
                                   {n: n for n in shapes}, width, shapes=shapes))
        return parts

    def _mixer_builder(self, mtype: str, dim: int, causal: bool, params: dict):
        cls = get_mixer(mtype)
        layout = {"grid": self.grid} if cls.grid_aware else {}
        return lambda: cls(dim, causal=causal, **layout, **params)

    def _frame_parts(self) -> list:
        """The stem, transitions and head of one small model per combination of stem and stage
        widths and downsampling (their blocks are not part of the frame)."""
        space, stem_type = self.space, STEM_FOR_KIND[self.io.kind]
        patches = space.stem_patch if stem_type != "embed" else (1,)
        strides = space.stem_stride if stem_type != "embed" else (0,)
        per_stage = [list(itertools.product(s.dim, s.downsample)) for s in space.stages]
        parts = []
        for patch, stride, *stages in itertools.product(patches, strides, *per_stage):
            if stride > patch:
                continue
            arch = ArchSpec(StemSpec(stem_type, patch, 0 if stride >= patch else stride),
                            tuple(StageSpec(d, (self._probe_block(si, d),), ds) for si, (d, ds) in enumerate(stages)),
                            causal=self.io.causal)
            build = (lambda a=arch: NASModel(a, self.io))
            located = {n: self._locate(n, arch) for n in _named_shapes(build) if not n.startswith("stages.")}
            parts.append(_Part(build, {n: k for n, (k, _) in located.items()},
                               {n: i for n, (_, i) in located.items()}, arch=arch))
        return parts

    def _probe_block(self, si: int, dim: int) -> BlockSpec:
        """Any valid block of stage ``si`` at width ``dim`` (a frame probe's block, not kept)."""
        stage = self.space.stages[si]
        for choice, depth in itertools.product(stage.all_mixers(), stage.depth):
            for params in valid_params(choice, dim, stage.heads_for(depth)):
                return BlockSpec(MixerSpec(choice.type, params), FFNSpec("none", 1.0))
        raise ValueError(f"stage {si} has no valid mixer at width {dim}")

    @staticmethod
    def _shapes(parts: list) -> dict:
        """The largest size along each axis of every key's tensors."""
        shapes: dict = {}
        for part in parts:
            for name, shape in part.shapes.items():
                key = part.keys[name]
                old = shapes.get(key, shape)
                if len(old) != len(shape):
                    raise ValueError(f"supernet key {key}: tensors of shapes {old} and {shape}")
                shapes[key] = tuple(max(a, b) for a, b in zip(old, shape))
        return shapes

    @torch.no_grad()
    def _initialise(self, parts: list) -> None:
        """Each shared tensor from the initialisations of the largest modules under it."""
        filled = {k: torch.zeros(p.shape, dtype=torch.bool) for k, p in self.weights.items()}
        for part in sorted(parts, key=lambda p: -p.numel):
            plans = {n: self._plan_for_part(k, part.shapes[n], n, part) for n, k in part.keys.items()}
            if all(gather(filled[k], plans[n]).all() for n, k in part.keys.items()):
                continue
            module = dict(part.build().named_parameters())
            for name, key in part.keys.items():
                todo = ~gather(filled[key], plans[name])
                scatter(self.weights[key], plans[name], module[name].detach(), todo)
                scatter(filled[key], plans[name], torch.ones_like(todo), todo)

    def _plan_for_part(self, key: str, shape: tuple, name: str, part: _Part) -> tuple:
        component, width, max_width = self._context(key, part.arch)
        if part.arch is None:
            width = part.width
        return axis_plan(tuple(self.weights[key].shape), shape, rule_for(component, part.inner[name]), width,
                         max_width)

    # ------------------------------------------------------------------ keys and widths
    def _context(self, key: str, arch: ArchSpec | None = None) -> tuple:
        """(component, width, largest width) of a shared key: ``mixer:softmax`` at its stage's width."""
        parts = key.split("/")
        if parts[0].startswith("s") and len(parts) > 2 and parts[1].startswith("b"):
            si = int(parts[0][1:])
            dims = self.space.stages[si].dim
            width = arch.stages[si].dim if arch is not None else max(dims)
            comp = f"{parts[2]}:{parts[3].split('@')[0]}" if parts[2] in ("mixer", "ffn") else parts[2]
            return comp, width, max(dims)
        if parts[0].startswith("t") and parts[0][1:].isdigit():
            si = int(parts[0][1:])
            dims = self.space.stages[si - 1].dim
            width = arch.stages[si - 1].dim if arch is not None else max(dims)
            return f"transition:{parts[1]}", width, max(dims)
        return parts[0], 0, 0

    def _locate(self, name: str, arch: ArchSpec) -> tuple:
        """(shared key, module-relative name) of parameter ``name`` of ``build_model(arch)``."""
        head, _, rest = name.partition(".")
        if head == "stages":
            si, bi, comp, inner = rest.split(".", 3)
            stage, block = arch.stages[int(si)], arch.stages[int(si)].blocks[int(bi)]
            if comp == "mixer":
                where = ("mixer", _mixer_group(block.mixer.type, stage.dim))
            elif comp == "ffn":
                where = ("ffn", block.ffn.type)
            else:
                where = (comp,)
            return _key(f"s{si}", f"b{bi}", *where, inner), inner
        if head == "transitions":
            si, inner = rest.split(".", 1)
            stage = arch.stages[int(si)]
            kind = stage.downsample if stage.downsample != "none" else "linear"
            return _key(f"t{si}", kind, inner), inner
        return _key(name), name

    # ------------------------------------------------------------------ paths
    def path_for(self, arch: ArchSpec) -> SupernetPath:
        """The one path of ``arch``; ValueError when the space cannot sample it."""
        text = arch.to_json()
        if text in self._paths:
            self._paths.move_to_end(text)
            return self._paths[text][0]
        self._check_in_space(arch)
        template = _template(arch, self.io)
        entries = []
        for name, p in template.named_parameters():
            key, inner = self._locate(name, arch)
            if key not in self.weights:
                raise ValueError(f"{arch.summary()}: {name} has no place in this supernet (key {key})")
            component, width, max_width = self._context(key, arch)
            plan = axis_plan(tuple(self.weights[key].shape), tuple(p.shape), rule_for(component, inner), width,
                             max_width)
            entries.append((name, key, plan))
        path = SupernetPath(arch, tuple(entries))
        self._paths[text] = (path, template)
        if len(self._paths) > _CACHE:
            self._paths.popitem(last=False)
        return path

    def _check_in_space(self, arch: ArchSpec) -> None:
        arch.validate()
        check_compatible(arch, self.io)
        if len(arch.stages) != len(self.space.stages):
            raise ValueError(f"the architecture has {len(arch.stages)} stages; the space has {len(self.space.stages)}")
        for si, (stage, choices) in enumerate(zip(arch.stages, self.space.stages)):
            if stage.dim not in choices.dim or len(stage.blocks) not in choices.depth:
                raise ValueError(f"stages[{si}]: width {stage.dim} and depth {len(stage.blocks)} must be among the "
                                 f"space's {list(choices.dim)} and {list(choices.depth)}")

    def weights_for(self, arch: ArchSpec) -> dict:
        """The path's weights by stand-alone parameter name (slices of the shared tensors)."""
        return {name: gather(self.weights[key], plan) for name, key, plan in self.path_for(arch).entries}

    def forward(self, x: torch.Tensor, arch: ArchSpec) -> torch.Tensor:
        """The output of ``arch``'s path on ``x``: the stand-alone model run on the shared weights."""
        path = self.path_for(arch)
        template = self._paths[arch.to_json()][1]
        device = next(iter(self.weights.values())).device
        template.to(device).train(self.training)
        return functional_call(template, self.weights_for(path.arch), (x,))

    @torch.no_grad()
    def extract(self, arch: ArchSpec) -> NASModel:
        """``build_model(arch, io)`` with the path's weights copied in (a model of its own)."""
        weights = self.weights_for(arch)
        with torch.random.fork_rng(devices=[]):
            model = build_model(arch, self.io)
        for name, p in model.named_parameters():
            p.copy_(weights[name])
        return model.to(next(iter(self.weights.values())).device)


def _template(arch: ArchSpec, io) -> NASModel:
    """``build_model(arch, io)`` under a fixed seed: its parameters are replaced on every call, its
    buffers (computed ones, e.g. Hyena's decay) are the stand-alone model's."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TEMPLATE_SEED)
        return build_model(arch, io)


def _named_shapes(build) -> dict:
    """Parameter shapes of ``build()``, built on the meta device (nothing allocated)."""
    with torch.device("meta"):
        module = build()
    return {} if module is None else {n: tuple(p.shape) for n, p in module.named_parameters()}


def _numel(shape: tuple) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
