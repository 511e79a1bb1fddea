"""What a front knows: each trial's chance of being on it, and the members whose order is not resolved.

A trial's metrics are measurements, and each comes with its uncertainty (docs/results.md,
"Fronts with error bars"). Per trial and metric:

- a quality metric (proxy training: ``accuracy``, ``bits_per_byte``, ...) stored as the mean of
  ``<m>_n`` seeds with their standard deviation ``<m>_std`` is Normal(mean, sem), sem = std / sqrt(n).
  A trial trained with one seed has no std of its own: it takes the study's pooled seed-to-seed std
  of that metric (from its complete trials with n >= 2), and none (the value is taken as exact) when
  no trial has two seeds, as in a study made before seeds were counted;
- a timed metric (``latency_ms``, ``decode_ms``, and ``@<profile>``) is its median times a
  log-normal factor whose 95% interval is the median's stored one: sigma = (ln high - ln low) / (2 x 1.96),
  from ``latency_ci_low``/``latency_ci_high`` (``@<profile>`` likewise), or in an older study from
  ``latency_ci``, the interval's half-width over the median (low, high = median x (1 -/+ ci));
- every other metric (``params``, ``flops``, memory) is exact.

:func:`p_front` draws every trial's metrics ``samples`` times from these distributions (seeded,
independent across trials and metrics), finds the non-dominated trials of each draw by the rule
of :func:`nas.results.trials.pareto_mask` (ties are non-dominated: two trials with the same exact
values are both on the front), and gives each trial the share of draws it is on the front. Only
trials that could count take part: COMPLETE, feasible and with every objective's value; a floor
(``nas.results.floors``) is applied to each draw, so a trial near its floor is on the front only
in the draws where it beats it. Trials that cannot take part get 0.

:func:`unresolved_with` marks each member of the (point-estimate) front with the trials that could
dominate it within their 95% intervals: on every objective where the member is better, the two
intervals overlap (and on one the other trial's interval reaches past the member's). With no
uncertainty known, only a tie could, and a tie of exact values does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np
import pandas as pd

from nas.results.floors import beats, floors_of
from nas.results.dominance import as_minimized, feasible_complete, pareto_mask

__all__ = ["CONFIRMED", "P_FRONT", "UNRESOLVED", "Z95", "Spread", "confirmed_mask", "front_masks", "intervals",
           "p_front", "sample_metrics", "spread_of", "unresolved_with"]

P_FRONT = "p_front"  # column of nas.pareto_front: the probability that the trial is non-dominated
UNRESOLVED = "unresolved_with"  # column of nas.pareto_front: trials that could dominate the member
CONFIRMED = "confirmed"  # column of nas.load_trials: the trial's values are those `nas confirm` measured
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
LOG_LOW_MIN = 1e-3  # an old relative interval's low end, as a fraction of the median, at least this


@dataclass(frozen=True)
class Spread:
    """One metric's distribution for each row: a draw is ``value + scale * z`` or, when ``log``,
    ``value * exp(scale * z)`` (z standard normal); ``low`` and ``high`` are its 95% interval."""

    value: np.ndarray
    scale: np.ndarray
    log: bool
    low: np.ndarray
    high: np.ndarray

    def draw(self, z: np.ndarray) -> np.ndarray:
        """Draws for standard normal ``z`` (..., rows)."""
        return self.value * np.exp(self.scale * z) if self.log else self.value + self.scale * z


def confirmed_mask(df: pd.DataFrame) -> np.ndarray:
    """Which rows of ``df`` hold confirmed values (``nas confirm``); none in a study without them."""
    if CONFIRMED not in df.columns:
        return np.zeros(len(df), dtype=bool)
    return df[CONFIRMED].astype("boolean").fillna(False).to_numpy(dtype=bool)


def _numbers(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        return np.full(len(df), np.nan)
    # a copy: pandas may hand out a read-only view (copy-on-write), and callers fill gaps in place
    return np.array(pd.to_numeric(df[col], errors="coerce"), dtype=float)


def _complete(df: pd.DataFrame) -> np.ndarray:
    return (df["state"] == "COMPLETE").to_numpy() if "state" in df.columns else np.ones(len(df), dtype=bool)


def _ci_columns(metric: str) -> Optional[tuple[str, str, str]]:
    """(low, high, old relative) column names of a timed metric's interval (``latency_ms@p`` ->
    ``latency_ci_low@p``, ``latency_ci_high@p``, ``latency_ci@p``); None for a metric not timed."""
    base, at, profile = metric.partition("@")
    if not base.endswith("_ms"):
        return None
    stem, suffix = base[: -len("_ms")] + "_ci", at + profile
    return f"{stem}_low{suffix}", f"{stem}_high{suffix}", stem + suffix


def _relative(cell, median: float) -> tuple[float, float]:
    """(low, high) from an old ``latency_ci`` cell: the half-width over the median, or a [low, high] pair."""
    if isinstance(cell, (list, tuple, np.ndarray)) and len(cell) == 2:
        return float(cell[0]), float(cell[1])
    try:
        c = float(cell)
    except (TypeError, ValueError):
        return np.nan, np.nan
    return median * max(1.0 - c, LOG_LOW_MIN), median * (1.0 + c)


def _timed_interval(df: pd.DataFrame, cols: tuple[str, str, str], value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the 95% interval of a timed metric's median per row: the stored ends, else
    from the old relative ``latency_ci`` (NaN where neither is known)."""
    low, high = _numbers(df, cols[0]), _numbers(df, cols[1])
    if cols[2] in df.columns:
        for i in np.flatnonzero(~(np.isfinite(low) & np.isfinite(high))):
            low[i], high[i] = _relative(df[cols[2]].iloc[i], value[i])
    return low, high


def _timed_spread(df: pd.DataFrame, metric: str, cols: tuple[str, str, str]) -> Spread:
    value = _numbers(df, metric)
    low, high = _timed_interval(df, cols, value)
    ok = np.isfinite(low) & np.isfinite(high) & (low > 0) & (high >= low) & (value > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = np.where(ok, (np.log(high) - np.log(low)) / (2 * Z95), 0.0)
    return Spread(value, sigma, True, np.where(ok, low, value), np.where(ok, high, value))


def _pooled_std(std: np.ndarray, n: np.ndarray) -> Optional[float]:
    """The pooled standard deviation of groups with ``std`` over ``n`` >= 2 seeds, None without any."""
    if not len(std):
        return None
    dof = n - 1
    return float(np.sqrt(np.sum(dof * std**2) / np.sum(dof)))


def _quality_spread(df: pd.DataFrame, metric: str) -> Spread:
    value = _numbers(df, metric)
    std, n = _numbers(df, f"{metric}_std"), _numbers(df, f"{metric}_n")
    n = np.where(np.isfinite(n) & (n >= 1), n, 1.0)
    own = np.isfinite(std) & (n >= 2)
    pooled = _pooled_std(std[own & _complete(df)], n[own & _complete(df)])
    sem = np.where(own, std, 0.0 if pooled is None else pooled) / np.sqrt(n)
    return Spread(value, sem, False, value - Z95 * sem, value + Z95 * sem)


def spread_of(df: pd.DataFrame, metric: str) -> Spread:
    """The distribution of ``metric`` for every row of ``df`` (from :func:`nas.load_trials`), by
    the model of the module docstring; the pooled std is taken over ``df``'s complete trials."""
    cols = _ci_columns(metric)
    return _timed_spread(df, metric, cols) if cols else _quality_spread(df, metric)


def intervals(df: pd.DataFrame, metrics) -> dict:
    """{metric: (low, high)}: the 95% interval of each of ``metrics`` for every row of ``df``
    (the value itself for an exact metric); the error bars of the plots."""
    return {m: (s.low, s.high) for m, s in ((m, spread_of(df, m)) for m in metrics)}


def sample_metrics(df: pd.DataFrame, metrics, rows: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """``samples`` draws of ``metrics`` for the rows of ``df`` selected by the boolean mask
    ``rows``: an array (samples, rows, metrics), seeded by ``seed``."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    z = np.random.default_rng(seed).standard_normal((samples, int(rows.sum()), len(metrics)))
    out = np.empty_like(z)
    for j, m in enumerate(metrics):
        s = spread_of(df, m)
        out[:, :, j] = Spread(s.value[rows], s.scale[rows], s.log, s.low[rows], s.high[rows]).draw(z[:, :, j])
    return out


def front_masks(loss: np.ndarray, eligible: Optional[np.ndarray] = None) -> np.ndarray:
    """For each draw of ``loss`` (draws, n, m; every objective minimized), which of its n rows are
    non-dominated among the ``eligible`` ones (draws, n; default all): :func:`pareto_mask` applied
    to each draw, vectorised over the draws (a row is dominated by an eligible row at least as good
    everywhere and better somewhere; equal rows are all kept; a row with a NaN is compared with
    none). Ineligible rows are not on it.

    The same sweep as ``pareto_mask``: in each draw's lexicographic order no row can dominate an
    earlier one, so the first row left is on the front, with the rows equal to it, and every row
    it weakly dominates is dropped; the sweep takes as many steps as the largest front has points."""
    draws, n, m = loss.shape
    eligible = np.ones((draws, n), dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    nan = np.isnan(loss).any(axis=2)
    order = np.lexsort([loss[:, :, k] for k in reversed(range(m))], axis=-1)  # (draws, n): objective 0 first
    ranked = np.take_along_axis(loss, order[:, :, None], axis=1)
    left = np.take_along_axis(eligible & ~nan, order, axis=1)
    on = np.zeros((draws, n), dtype=bool)
    every = np.arange(draws)
    while left.any():
        top = ranked[every, left.argmax(axis=1)]  # (draws, m): the first row left in each draw
        covered = (top[:, None, :] <= ranked).all(axis=2) & left  # equal to top, or dominated by it
        on |= covered & (top[:, None, :] == ranked).all(axis=2)
        left &= ~covered
    out = np.zeros((draws, n), dtype=bool)
    np.put_along_axis(out, order, on, axis=1)
    return out | (eligible & nan)


def p_front(df: pd.DataFrame, *, objectives: Optional[Mapping[str, str]] = None, floors: Optional[Mapping] = None,
            samples: int = 2000, seed: int = 0) -> pd.Series:
    """The probability that each trial of ``df`` (from :func:`nas.load_trials`) is non-dominated
    under its measured uncertainty, by ``samples`` draws seeded with ``seed`` (the model of the
    module docstring); indexed like ``df``, named ``p_front``. ``objectives`` default to
    ``df.attrs["objectives"]``, ``floors`` to the study's (:func:`nas.results.floors.floors_of`).
    Trials that are not COMPLETE, violate a constraint or lack an objective's value get 0."""
    objectives = dict(objectives or df.attrs.get("objectives") or {})
    if not objectives:
        raise ValueError("no objectives: pass objectives={column: direction} or use load_trials()")
    floors, cols = floors_of(df, floors), list(objectives)
    out = pd.Series(0.0, index=df.index, name=P_FRONT)
    rows = df.index.isin(feasible_complete(df, cols, floors={}).index)
    if not rows.any() or any(m not in df.columns for m in floors):
        return out
    metrics = cols + [m for m in floors if m not in objectives]
    drawn = sample_metrics(df, metrics, rows, samples, seed)
    eligible = np.ones(drawn.shape[:2], dtype=bool)
    for m, floor in floors.items():
        eligible &= beats(drawn[:, :, metrics.index(m)], floor)
    loss = as_minimized(drawn[:, :, : len(cols)].reshape(-1, len(cols)), [objectives[c] for c in cols])
    out[rows] = front_masks(loss.reshape(drawn.shape[0], -1, len(cols)), eligible).mean(axis=0)
    return out


def _minimized_intervals(df: pd.DataFrame, objectives: Mapping[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of every objective of ``df``'s rows, (rows, objectives), as objectives to minimize."""
    lows, highs = [], []
    for c, d in objectives.items():
        lo, hi = intervals(df, [c])[c]
        lows.append(-hi if d == "maximize" else lo)
        highs.append(-lo if d == "maximize" else hi)
    return np.stack(lows, axis=1), np.stack(highs, axis=1)


def unresolved_with(df: pd.DataFrame, objectives: Optional[Mapping[str, str]] = None, *,
                    floors: Optional[Mapping] = None) -> pd.Series:
    """For each member of the point-estimate front of ``df`` (the rows of ``nas.pareto_front``),
    the trial numbers of the other counted trials that could dominate it within their 95%
    intervals: at least as good at their best as the member at its worst on every objective, and
    better on one. Indexed like those rows; an empty list where the member's place is resolved."""
    objectives = dict(objectives or df.attrs.get("objectives") or {})
    cols = list(objectives)
    pool = feasible_complete(df, cols, floors=floors_of(df, floors))
    if pool.empty:
        return pd.Series([], index=pool.index, dtype=object, name=UNRESOLVED)
    front = pareto_mask(pool[cols].to_numpy(dtype=float), [objectives[c] for c in cols])
    rows = df.index.isin(pool.index)  # intervals from all of df: the pooled std is the study's
    low, high = (x[rows] for x in _minimized_intervals(df, objectives))
    numbers = pool["number"].to_numpy() if "number" in pool.columns else pool.index.to_numpy()
    lists = []
    for a in np.flatnonzero(front):
        could = np.all(low <= high[a], axis=1) & np.any(low < high[a], axis=1)
        could[a] = False
        lists.append([int(x) for x in numbers[could]])
    return pd.Series(lists, index=pool.index[front], dtype=object, name=UNRESOLVED)
