"""Floors: the value a trial must beat on a metric to count on a front.

A space sets them (``floors: {accuracy: chance}`` or a number); the search resolves them once,
with the task's chance level, and stores them with the study's config
(``evaluators.spaces.resolve_floors``): ``{metric: {"above": x}}`` for a metric to maximize,
``{"below": x}`` for one to minimize. Readers apply them from the study alone (no task registry,
no torch). A trial that does not beat every floor strictly, or lacks the metric, is left out of
the front and the hypervolume, as a trial that violates a constraint is.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np
import pandas as pd

__all__ = ["FLOORS", "beats", "beats_floors", "floor_text", "floors_of"]

FLOORS = "floors"  # df.attrs key (and the stored config's): {metric: {"above": x} | {"below": x}}


def floors_of(df: pd.DataFrame, floors: Optional[Mapping] = None) -> dict:
    """The floors that apply to ``df``: ``floors`` when given, else ``df.attrs["floors"]``, else
    those of the stored search config (``df.attrs["config"]``); {} for a study without any."""
    if floors is not None:
        return dict(floors)
    if FLOORS in df.attrs:
        return dict(df.attrs[FLOORS] or {})
    return dict((df.attrs.get("config") or {}).get(FLOORS) or {})


def beats(values: np.ndarray, floor: Mapping) -> np.ndarray:
    """Where ``values`` (any shape) beat ``floor`` ({"above": x} or {"below": x}) strictly; a NaN
    beats nothing."""
    values = np.asarray(values, dtype=float)
    if "above" in floor:
        return values > float(floor["above"])
    return values < float(floor["below"])


def beats_floors(df: pd.DataFrame, floors: Mapping) -> np.ndarray:
    """Boolean mask of the rows of ``df`` that beat every floor (a row without a floor's metric,
    or a frame without its column, does not)."""
    ok = np.ones(len(df), dtype=bool)
    for metric, floor in floors.items():
        if metric not in df.columns:
            return np.zeros(len(df), dtype=bool)
        ok &= beats(pd.to_numeric(df[metric], errors="coerce").to_numpy(dtype=float), floor)
    return ok


def floor_text(floors: Mapping) -> str:
    """'accuracy > 0.03125, bits_per_byte < 8': the floors in words."""
    return ", ".join(f"{m} {'>' if 'above' in f else '<'} {float(f.get('above', f.get('below'))):.4g}"
                     for m, f in floors.items())
