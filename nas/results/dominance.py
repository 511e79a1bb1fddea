"""Which trials count, and which of them no other dominates: the one dominance computation of the
package, beneath the tables (``nas.results.trials``), the hypervolume and the uncertainty of a front."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd

from nas.results.floors import beats_floors, floors_of

__all__ = ["FEASIBLE", "as_minimized", "excluded_counts", "feasible_complete", "pareto_mask"]

FEASIBLE = "feasible"  # column: COMPLETE trial that satisfies every constraint (NA for unfinished trials)


def as_minimized(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """``values`` (n, m) as floats with every column turned into one to minimize (the columns
    whose direction is "maximize" negated), after checking the shape and the direction names."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(directions):
        raise ValueError(f"values must be (n, {len(directions)}), got {values.shape}")
    for d in directions:
        if d not in ("maximize", "minimize"):
            raise ValueError(f"direction {d!r} is not 'maximize' or 'minimize'")
    return values * np.array([-1.0 if d == "maximize" else 1.0 for d in directions])


def pareto_mask(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (n, m) under ``directions``
    ("maximize"/"minimize" per column). A row is dominated if another row is at least as good in
    every objective and strictly better in one. Duplicated rows are all kept; a row with a NaN is
    compared with none (it is kept, and drops no other row).

    The one dominance computation of the package (the Pareto front, the front size on the progress
    lines, the hypervolume; :func:`nas.results.uncertainty.front_masks` is the same sweep over many
    draws at once, tested against it), Optuna's (``study.best_trials``): among the distinct rows
    sorted lexicographically no row can dominate an earlier one, so the first row left is on the
    front, and it drops every row it weakly dominates."""
    loss = as_minimized(values, directions)
    mask = np.ones(len(loss), dtype=bool)
    rows = ~np.isnan(loss).any(axis=1)
    if rows.any():
        distinct, inverse = np.unique(loss[rows], axis=0, return_inverse=True)  # lexicographic order
        mask[rows] = _front_of_sorted(distinct)[inverse.reshape(-1)]
    return mask


def _front_of_sorted(loss: np.ndarray) -> np.ndarray:
    """Which rows of ``loss`` (distinct, sorted lexicographically, every column minimized) are
    non-dominated."""
    on_front = np.zeros(len(loss), dtype=bool)
    left = np.arange(len(loss))
    while len(left):
        top = left[0]
        on_front[top] = True
        left = left[np.any(loss[left] < loss[top], axis=1)]  # what ``top`` does not weakly dominate
    return on_front


def feasible_complete(df: pd.DataFrame, cols: Sequence[str] = (), floors: Optional[dict] = None) -> pd.DataFrame:
    """The rows of ``df`` that can rank architectures: COMPLETE (when there is a ``state``
    column), feasible (when there is a ``feasible`` column; every row of a study without
    constraints is), above every floor (``floors``, default the study's:
    :func:`nas.results.floors.floors_of`; ``{}`` for none) and with a value in each of ``cols``."""
    done = df[df["state"] == "COMPLETE"] if "state" in df.columns else df
    if FEASIBLE in done.columns:
        done = done[done[FEASIBLE].astype("boolean").fillna(False).to_numpy(dtype=bool)]
    floors = floors_of(df, floors)
    if floors:
        done = done[beats_floors(done, floors)]
    return done.dropna(subset=list(cols))


def excluded_counts(df: pd.DataFrame) -> tuple[int, int]:
    """(COMPLETE trials that violate a constraint, feasible COMPLETE trials below a floor): the
    complete trials :func:`feasible_complete` leaves out, by reason."""
    feasible = len(feasible_complete(df, floors={}))
    return int((df["state"] == "COMPLETE").sum()) - feasible, feasible - len(feasible_complete(df))
