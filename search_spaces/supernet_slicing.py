"""How a supernet's shared tensors are cut into a path's weights, as data.

Every shared tensor has the largest shape any architecture of the space needs under its key. A
path's tensor of a smaller shape is taken from it axis by axis:

* by default, the first ``n`` entries of each axis (AutoFormer's and HAT's slicing: a narrower
  Linear uses the top-left block of the widest one);
* where an axis is several projections stacked (a fused Q/K/V, a gate and its value, Hyena's
  ``order + 1`` projections), the first entries of each stacked part (:class:`Chunks`), so the
  narrow Q is cut from the wide Q and not from the wide K.

Which parameters are stacked is declared below per mixer (``mixer:<name>``), FFN (``ffn:<name>``)
and transition (``transition:<kind>``), keyed by the parameter's name inside that module. A
mixer listed in :data:`PER_WIDTH` is not sliced across widths: each width has its own copy
(slices still share across its other parameters), because a narrower slice of it would not be
the same operator (GFNet's filter is resampled to the input length, so its first bins are not a
band of a wider filter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

__all__ = ["Chunks", "PER_WIDTH", "SLICE_RULES", "axis_plan", "gather", "rule_for", "scatter"]


@dataclass(frozen=True)
class Chunks:
    """An axis made of stacked parts: ``count`` equal parts, or (``count`` None) parts one layer
    width each (their number varies with a parameter, e.g. Hyena's order)."""

    count: Optional[int] = None
    axis: int = 0


_QKV = {"qkv.weight": Chunks(3), "qkv.bias": Chunks(3)}
_KV = {"kv.weight": Chunks(2), "kv.bias": Chunks(2)}
_PER_WIDTH_PARTS = {name: Chunks() for name in ("in_proj.weight", "in_proj.bias", "short_conv.weight",
                                                  "short_conv.bias", "filter.bias", "filter.mlp.4.weight",
                                                  "filter.mlp.4.bias")}

SLICE_RULES: dict = {
    **{f"mixer:{m}": _QKV for m in ("binary", "linear", "local", "moh", "routing", "softmax", "subsampled")},
    "mixer:gqa": _KV,
    "mixer:sqa": _KV,
    "mixer:hilo": {"h_qkv.weight": Chunks(3), "h_qkv.bias": Chunks(3), "l_kv.weight": Chunks(2),
                   "l_kv.bias": Chunks(2)},
    "mixer:glu": {"fc_in.weight": Chunks(2), "fc_in.bias": Chunks(2)},
    "mixer:hyena": _PER_WIDTH_PARTS,
    "mixer:hyena2d": _PER_WIDTH_PARTS,
    "ffn:glu": {"fc1.weight": Chunks(2), "fc1.bias": Chunks(2)},
    "transition:merge": {"norm.weight": Chunks(), "norm.bias": Chunks(), "proj.weight": Chunks(axis=1)},
}

PER_WIDTH = frozenset({"gfnet"})


def rule_for(component: str, name: str) -> Optional[Chunks]:
    """The stacking rule of parameter ``name`` of ``component`` (``mixer:softmax``), if any."""
    return SLICE_RULES.get(component, {}).get(name)


def _chunk_index(rule: Chunks, full: int, n: int, width: int, max_width: int) -> Optional[torch.Tensor]:
    """Indices of the first entries of each stacked part, or None when the sizes do not split."""
    if rule.count:
        parts, size, take = rule.count, full // rule.count, n // rule.count
        if full % parts or n % parts:
            return None
    else:
        if not width or n % width or full % max_width:
            return None
        parts, size, take = n // width, max_width, width
    if parts * size > full or take > size:
        return None
    return (torch.arange(parts)[:, None] * size + torch.arange(take)[None]).flatten()  # (parts * take,)


def axis_plan(full_shape: tuple, shape: tuple, rule: Optional[Chunks], width: int, max_width: int) -> tuple:
    """Per axis: an int ``n`` (take the first n) or an index tensor (stacked parts). ValueError
    when ``shape`` does not fit in ``full_shape``."""
    if len(full_shape) != len(shape) or any(n > f for n, f in zip(shape, full_shape)):
        raise ValueError(f"shape {tuple(shape)} does not fit in the shared {tuple(full_shape)}")
    plan = []
    for axis, (f, n) in enumerate(zip(full_shape, shape)):
        index = None
        if rule is not None and rule.axis == axis and n != f:
            index = _chunk_index(rule, f, n, width, max_width)
        plan.append(n if index is None else index)
    return tuple(plan)


def gather(tensor: torch.Tensor, plan: tuple) -> torch.Tensor:
    """The path's tensor cut from the shared ``tensor`` (differentiable: gradients reach the shared one)."""
    out = tensor
    for axis, step in enumerate(plan):
        if isinstance(step, int):
            if step != out.shape[axis]:
                out = out.narrow(axis, 0, step)
        else:
            out = out.index_select(axis, step.to(out.device))
    return out


@torch.no_grad()
def scatter(tensor: torch.Tensor, plan: tuple, value: torch.Tensor, where: Optional[torch.Tensor] = None) -> None:
    """Write ``value`` into the entries of ``tensor`` that :func:`gather` with ``plan`` reads
    (only where the boolean ``where``, of ``value``'s shape, is true)."""
    flat = gather(torch.arange(tensor.numel()).view(tensor.shape), plan).flatten()
    src = value.flatten().to(tensor.dtype)
    if where is not None:
        keep = where.flatten()
        flat, src = flat[keep], src[keep]
    tensor.view(-1)[flat.to(tensor.device)] = src.to(tensor.device)
