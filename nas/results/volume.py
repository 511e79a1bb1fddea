"""Hypervolume of a Pareto front: the volume of objective space it dominates, up to a reference point.

``nas.hypervolume`` and ``nas.hypervolume_history`` are the functions here (the module is not named
``nas.hypervolume``, so that name stays the function however the package was imported).

Exact for any number of objectives: a sweep in 2-D, and slicing along the last objective (each
slab's volume is the (m-1)-D hypervolume of the points at or below it) in 3-D and up, which is
fine for the fronts a search produces (tens of points).

Only finished trials that satisfy every constraint count (COMPLETE and ``feasible``, see
:func:`nas.results.trials.feasible_complete`): the hypervolume is that of the front ``nas.pareto_front``
returns. A study without constraints counts every COMPLETE trial.

Default reference point (stated, because every hypervolume number depends on it): per objective,
the worst value among the finished feasible trials, moved further in the worse direction by 10% of
that objective's range (max - min over those trials). If the range is 0, the shift is 10% of
the value's magnitude, or 1.0 when the value is 0. So every finished feasible trial, including the
worst, adds some volume. Pass ``reference`` to compare studies or runs against one fixed point.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from nas.results.trials import as_minimized, feasible_complete, pareto_mask

__all__ = ["hypervolume", "hypervolume_history", "reference_point", "hypervolume_of"]

Reference = Union[None, Mapping[str, float], Sequence[float]]


def hypervolume_of(points: np.ndarray, reference: Sequence[float]) -> float:
    """Exact hypervolume of ``points`` (n, m), every objective minimized, bounded by ``reference``.
    Points that do not strictly dominate the reference in every objective add nothing."""
    ref = np.asarray(reference, dtype=float)
    p = np.asarray(points, dtype=float).reshape(-1, ref.size)
    p = p[np.all(p < ref, axis=1)]
    if len(p) == 0:
        return 0.0
    return float(_hv(_front(p), ref))


def _front(p: np.ndarray) -> np.ndarray:
    """The distinct non-dominated points of ``p`` (every objective minimized)."""
    return np.unique(p[pareto_mask(p, ("minimize",) * p.shape[1])], axis=0)


def _hv(p: np.ndarray, ref: np.ndarray) -> float:
    m = ref.size
    if m == 1:
        return float(ref[0] - p[:, 0].min())
    if m == 2:
        p = p[np.argsort(p[:, 0], kind="stable")]
        vol, best_y = 0.0, ref[1]
        for x, y in p:  # ascending x; a point adds the strip below the best y seen so far
            if y < best_y:
                vol += (ref[0] - x) * (best_y - y)
                best_y = y
        return vol
    # slice along the last objective: between consecutive z values, the dominated cross-section is
    # the (m-1)-D hypervolume of every point with z at or below the slab's bottom
    p = p[np.argsort(p[:, -1], kind="stable")]
    zs = np.append(p[:, -1], ref[-1])
    vol = 0.0
    for i in range(len(p)):
        height = zs[i + 1] - zs[i]
        if height > 0:
            vol += height * _hv(_front(p[: i + 1, :-1]), ref[:-1])
    return vol


def _objectives(df: pd.DataFrame, objectives: Optional[Mapping[str, str]]) -> dict:
    objectives = dict(objectives or df.attrs.get("objectives") or {})
    if not objectives:
        raise ValueError("no objectives: pass objectives={column: direction} or use load_trials()")
    missing = [c for c in objectives if c not in df.columns]
    if missing:
        raise ValueError(f"objective column(s) {missing} not in the DataFrame")
    return objectives


def _finished(df: pd.DataFrame, cols: list) -> pd.DataFrame:
    done = feasible_complete(df, cols)
    return done.sort_values("number") if "number" in done.columns else done


def reference_point(df: pd.DataFrame, objectives: Optional[Mapping[str, str]] = None) -> dict:
    """The default reference point (column -> value, in the objective's own units and sense):
    the worst finished feasible value, moved away by 10% of their range (see the module docstring)."""
    objectives = _objectives(df, objectives)
    cols = list(objectives)
    done = _finished(df, cols)
    if done.empty:
        raise ValueError("no finished feasible trials with objective values: no default reference point")
    ref = {}
    for c, d in objectives.items():
        v = done[c].to_numpy(dtype=float)
        span = float(v.max() - v.min())
        worst = float(v.min() if d == "maximize" else v.max())
        shift = 0.1 * span if span > 0 else (0.1 * abs(worst) if worst != 0 else 1.0)
        ref[c] = worst - shift if d == "maximize" else worst + shift
    return ref


def _ref_vector(df, objectives: dict, reference: Reference) -> np.ndarray:
    cols = list(objectives)
    if reference is None:
        reference = reference_point(df, objectives)
    if isinstance(reference, Mapping):
        missing = [c for c in cols if c not in reference]
        if missing:
            raise ValueError(f"reference point lacks objective(s) {missing}")
        reference = [reference[c] for c in cols]
    reference = np.asarray(reference, dtype=float)
    if reference.shape != (len(cols),):
        raise ValueError(f"reference point must have {len(cols)} values ({cols}), got {reference.shape}")
    return as_minimized(reference[None, :], [objectives[c] for c in cols])[0]


def _minimized(df: pd.DataFrame, reference: Reference, objectives: Optional[Mapping[str, str]]) -> tuple:
    """``(done, points, reference)``: the finished feasible rows of ``df`` in trial-number order,
    their objective values and the reference point, every objective minimized (no reference point
    is worked out when there are no rows)."""
    objectives = _objectives(df, objectives)
    cols = list(objectives)
    done = _finished(df, cols)
    if done.empty:
        return done, np.empty((0, len(cols))), None
    points = as_minimized(done[cols].to_numpy(dtype=float), [objectives[c] for c in cols])
    return done, points, _ref_vector(df, objectives, reference)


def hypervolume(df: pd.DataFrame, reference: Reference = None,
                objectives: Optional[Mapping[str, str]] = None) -> float:
    """Hypervolume of the COMPLETE feasible trials of ``df`` (from :func:`nas.load_trials`) in the space of
    its objectives (``df.attrs["objectives"]`` unless given), up to ``reference`` (a mapping
    column -> value or a sequence in objective order, in the objectives' own units; default
    :func:`reference_point`). Only the non-dominated trials matter; it is in the product of the
    objectives' units (e.g. accuracy x ms)."""
    _done, pts, ref = _minimized(df, reference, objectives)
    return hypervolume_of(pts, ref) if len(pts) else 0.0


def hypervolume_history(df: pd.DataFrame, reference: Reference = None,
                        objectives: Optional[Mapping[str, str]] = None) -> pd.DataFrame:
    """Progress of a search: for k = 1..K finished (COMPLETE) feasible trials in trial-number order,
    the hypervolume of the first k, all against one reference point (default: from all K, so the
    curve never decreases). Columns: ``k``, ``number`` (the k-th such trial), ``hypervolume``."""
    done, pts, ref = _minimized(df, reference, objectives)
    if done.empty:
        return pd.DataFrame({"k": [], "number": [], "hypervolume": []})
    hv, front = [], np.empty((0, pts.shape[1]))
    for i in range(len(pts)):
        front = np.vstack([front, pts[i : i + 1]])
        front = _front(front)  # the front of the first k is all that the next step needs
        hv.append(hypervolume_of(front, ref))
    numbers = done["number"].to_numpy() if "number" in done.columns else np.arange(len(done))
    return pd.DataFrame({"k": np.arange(1, len(pts) + 1), "number": numbers, "hypervolume": hv})
