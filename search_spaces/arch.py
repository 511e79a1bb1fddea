"""ArchSpec: a candidate architecture as plain, frozen, JSON-serializable data.

An ArchSpec is validated before any tensor exists. ``validate()`` raises
:class:`ArchValidationError` whose message names the path of the offending field and the rule
broken, e.g. ``stages[1].blocks[0].mixer.heads: 6 does not divide dim 128``.

The tree::

    ArchSpec
      stem: StemSpec            how inputs become tokens (embed | patch1d | patch2d)
      stages: (StageSpec, ...)  each: dim, downsample into the stage, blocks
        blocks: (BlockSpec, ...)  each: mixer (MixerSpec), ffn (FFNSpec), norm placement
      causal: bool              a causal model never lets token t see tokens > t
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = [
    "ArchSpec",
    "ArchValidationError",
    "BlockSpec",
    "FFNSpec",
    "MixerSpec",
    "StageSpec",
    "StemSpec",
    "STEM_TYPES",
    "DOWNSAMPLE_TYPES",
    "NORM_PLACEMENTS",
]

STEM_TYPES = ("embed", "patch1d", "patch2d")
DOWNSAMPLE_TYPES = ("none", "merge", "conv")
NORM_PLACEMENTS = ("pre", "post")


class ArchValidationError(ValueError):
    """An ArchSpec breaks a rule; the message starts with the path of the offending field."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.rule = message
        super().__init__(f"{path}: {message}" if path else message)


def _freeze_params(params: Mapping[str, Any] | None) -> dict:
    """Params are primitives only (str, int, float, bool); keys sorted for a canonical form."""
    out = {}
    for key in sorted(params or {}):
        value = params[key]
        if isinstance(value, bool) or value is None or isinstance(value, (int, float, str)):
            out[str(key)] = value
        else:
            raise TypeError(f"parameter {key!r} must be a primitive, got {type(value).__name__}")
    return out


@dataclass(frozen=True)
class MixerSpec:
    type: str
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "params", _freeze_params(self.params))

    def __hash__(self):
        return hash((self.type, tuple(self.params.items())))


@dataclass(frozen=True)
class FFNSpec:
    type: str = "mlp"  # "mlp" | "glu" | "none"
    ratio: float = 4.0

    def __post_init__(self):
        if isinstance(self.ratio, int) and not isinstance(self.ratio, bool):
            object.__setattr__(self, "ratio", float(self.ratio))  # 4 and 4.0 hash alike


@dataclass(frozen=True)
class BlockSpec:
    mixer: MixerSpec
    ffn: FFNSpec = FFNSpec()
    norm: str = "pre"


@dataclass(frozen=True)
class StageSpec:
    dim: int
    blocks: tuple = ()
    downsample: str = "none"  # how tokens enter this stage: none | merge (x2) | conv (stride 2)

    def __post_init__(self):
        object.__setattr__(self, "blocks", tuple(self.blocks))


@dataclass(frozen=True)
class StemSpec:
    type: str = "embed"
    patch: int = 1
    stride: int = 0  # 0 means "equal to patch"

    @property
    def effective_stride(self) -> int:
        return self.stride or self.patch


@dataclass(frozen=True)
class ArchSpec:
    stem: StemSpec
    stages: tuple
    causal: bool = False

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(self.stages))

    # ----------------------------------------------------------------- serialization
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace, so equal specs give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ArchSpec":
        try:
            stem = StemSpec(**d["stem"])
            stages = []
            for s in d["stages"]:
                blocks = []
                for b in s["blocks"]:
                    blocks.append(
                        BlockSpec(
                            mixer=MixerSpec(**b["mixer"]),
                            ffn=FFNSpec(**b.get("ffn", {})),
                            norm=b.get("norm", "pre"),
                        )
                    )
                stages.append(StageSpec(dim=s["dim"], blocks=tuple(blocks),
                                        downsample=s.get("downsample", "none")))
            return cls(stem=stem, stages=tuple(stages), causal=bool(d.get("causal", False)))
        except (KeyError, TypeError) as e:
            raise ArchValidationError("", f"not an ArchSpec dict: {e}") from e

    @classmethod
    def from_json(cls, s: str) -> "ArchSpec":
        return cls.from_dict(json.loads(s))

    @property
    def arch_id(self) -> str:
        """Short, stable hash of the canonical JSON."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    # ----------------------------------------------------------------- summaries
    @property
    def depth(self) -> int:
        return sum(len(s.blocks) for s in self.stages)

    def mixer_types(self) -> list[str]:
        return [b.mixer.type for s in self.stages for b in s.blocks]

    def dominant_family(self) -> str:
        """The mixer family with the most blocks (``attention``, ``hyena``, ``spectral``, ...);
        ``mixed`` when two families tie."""
        from collections import Counter

        from search_spaces.mixer_registry import get_mixer_info

        counts = Counter(get_mixer_info(t).family for t in self.mixer_types()).most_common()
        if len(counts) > 1 and counts[0][1] == counts[1][1]:
            return "mixed"
        return counts[0][0]

    def summary(self) -> str:
        """Compact one-line description, e.g. ``embed | 64: softmax(h=4)+mlp x2``."""
        from search_spaces.mixer_registry import get_mixer_info, list_mixers

        parts = []
        for s in self.stages:
            layers = []
            for b in s.blocks:
                known = b.mixer.type in list_mixers()
                params = {**(get_mixer_info(b.mixer.type).defaults() if known else {}), **b.mixer.params}
                p = ",".join(f"{'h' if k == 'heads' else k}={v}" for k, v in sorted(params.items())
                             if k in ("heads", "kv_heads", "window", "order") or k in b.mixer.params)
                layers.append(f"{b.mixer.type}({p})" + ("" if b.ffn.type == "none" else f"+{b.ffn.type}"))
            # run-length encode identical consecutive layers
            rle, prev, n = [], None, 0
            for layer in layers + [None]:
                if layer == prev:
                    n += 1
                    continue
                if prev is not None:
                    rle.append(prev + (f" x{n}" if n > 1 else ""))
                prev, n = layer, 1
            ds = "" if s.downsample == "none" else f"{s.downsample}->"
            parts.append(f"{ds}{s.dim}: " + " ".join(rle))
        return f"{self.stem.type}" + ("[causal]" if self.causal else "") + " | " + " | ".join(parts)

    # ----------------------------------------------------------------- validation
    def validate(self) -> "ArchSpec":
        """Check every rule; raise ArchValidationError naming the path. Returns self."""
        _check_stem(self.stem, self.causal)
        if not self.stages:
            raise ArchValidationError("stages", "at least one stage is needed")
        for si, stage in enumerate(self.stages):
            _check_stage(stage, f"stages[{si}]", first=si == 0, causal=self.causal)
            for bi, block in enumerate(stage.blocks):
                _check_block(block, f"stages[{si}].blocks[{bi}]", dim=stage.dim, stem=self.stem, causal=self.causal)
        return self


def _check_stem(stem: StemSpec, causal: bool) -> None:
    if stem.type not in STEM_TYPES:
        raise ArchValidationError("stem.type", f"{stem.type!r} is not one of {list(STEM_TYPES)}")
    if not isinstance(stem.patch, int) or stem.patch < 1:
        raise ArchValidationError("stem.patch", f"{stem.patch!r} must be an integer >= 1")
    if not isinstance(stem.stride, int) or stem.stride < 0:
        raise ArchValidationError("stem.stride", f"{stem.stride!r} must be an integer >= 0")
    if stem.stride > stem.patch:
        raise ArchValidationError("stem.stride", f"{stem.stride} is larger than patch {stem.patch} (tokens would skip input)")
    if stem.type == "embed" and stem.patch != 1:
        raise ArchValidationError("stem.patch", "an embedding stem has patch 1")
    if causal and stem.type != "embed" and stem.patch != 1:
        raise ArchValidationError("stem.patch", "a causal model needs patch 1 (a patch mixes future samples)")


def _check_stage(stage: StageSpec, where: str, *, first: bool, causal: bool) -> None:
    """The stage's own fields (its blocks are checked one by one)."""
    if not isinstance(stage.dim, int) or isinstance(stage.dim, bool) or stage.dim < 1:
        raise ArchValidationError(f"{where}.dim", f"{stage.dim!r} must be an integer >= 1")
    if stage.downsample not in DOWNSAMPLE_TYPES:
        raise ArchValidationError(f"{where}.downsample", f"{stage.downsample!r} is not one of {list(DOWNSAMPLE_TYPES)}")
    if first and stage.downsample != "none":
        raise ArchValidationError(f"{where}.downsample", "the first stage takes the stem's tokens as they are; use the stem's stride")
    if causal and stage.downsample != "none":
        raise ArchValidationError(f"{where}.downsample", f"{stage.downsample!r} merges tokens, which a causal model cannot do")
    if not stage.blocks:
        raise ArchValidationError(f"{where}.blocks", "a stage needs at least one block")


def _check_block(block: BlockSpec, bp: str, *, dim: int, stem: StemSpec, causal: bool) -> None:
    """One block at path ``bp`` in a stage of width ``dim``: its mixer, FFN and norm placement."""
    from kernels.registry import UnknownName
    from search_spaces.ffn import FFNS

    _check_mixer(block.mixer, f"{bp}.mixer", dim=dim, stem=stem, causal=causal)
    try:
        FFNS.get(block.ffn.type)
    except UnknownName as e:
        raise ArchValidationError(f"{bp}.ffn.type", str(e)) from None
    if not isinstance(block.ffn.ratio, (int, float)) or block.ffn.ratio <= 0:
        raise ArchValidationError(f"{bp}.ffn.ratio", f"{block.ffn.ratio!r} must be a number > 0")
    if block.norm not in NORM_PLACEMENTS:
        raise ArchValidationError(f"{bp}.norm", f"{block.norm!r} is not one of {list(NORM_PLACEMENTS)}")


def _check_mixer(mixer: MixerSpec, mp: str, *, dim: int, stem: StemSpec, causal: bool) -> None:
    """A mixer against its registration: known, usable here, each parameter allowed, every rule kept."""
    from kernels.registry import UnknownName
    from search_spaces.mixer_registry import get_mixer_info

    try:
        info = get_mixer_info(mixer.type)
    except UnknownName as e:
        raise ArchValidationError(f"{mp}.type", str(e)) from None
    if causal and not info.causal:
        raise ArchValidationError(f"{mp}.type", f"{mixer.type} does not support causal use")
    if stem.type != "patch2d" and info.needs_2d:
        raise ArchValidationError(f"{mp}.type", f"{mixer.type} needs 2-D tokens (a patch2d stem)")
    for pname, value in mixer.params.items():
        if pname not in info.params:
            raise ArchValidationError(f"{mp}.{pname}", f"{mixer.type} has no parameter {pname!r}; it takes {sorted(info.params)}")
        err = info.params[pname].check(value)
        if err:
            raise ArchValidationError(f"{mp}.{pname}", err)
    for rule in info.rules:
        err = rule(dim, {**info.defaults(), **mixer.params})
        if err:
            field_name, msg = err
            raise ArchValidationError(f"{mp}.{field_name}", msg)
