"""Results as pandas: one row per trial, and the Pareto front as a pure function."""

from __future__ import annotations

import functools
import json
import os
from typing import Optional, Sequence, Union

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from nas.store.trial_attrs import (
    ARCH_ID_KEY,
    ARCH_KEY,
    BASELINE_KEY,
    ERROR_KEY,
    LADDER_STOPPED_KEY,
    PRUNED_REASON_KEY,
    REUSED_FROM_KEY,
    SUMMARY_KEY,
    Retries,
    metrics_of,
    retries_of,
    wall_seconds,
)
from nas.store.trial_rows import feasible_values, results_trials

__all__ = ["load_trials", "trials_frame", "pareto_front", "pareto_mask", "as_minimized", "flatten_arch", "feasible_complete",
           "front_size", "CONSTRAINT_PREFIX", "FEASIBLE"]

FEASIBLE = "feasible"  # column: COMPLETE trial that satisfies every constraint (NA for unfinished trials)
CONSTRAINT_PREFIX = "constraint."  # one column per constraint: Optuna's value (<= 0 satisfied, > 0 violation)


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
    lines, the hypervolume), Optuna's (``study.best_trials``): among the distinct rows sorted
    lexicographically no row can dominate an earlier one, so the first row left is on the front,
    and it drops every row it weakly dominates."""
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


def feasible_complete(df: pd.DataFrame, cols: Sequence[str] = ()) -> pd.DataFrame:
    """The rows of ``df`` that can rank architectures: COMPLETE (when there is a ``state``
    column), feasible (when there is a ``feasible`` column; every row of a study without
    constraints is) and with a value in each of ``cols``."""
    done = df[df["state"] == "COMPLETE"] if "state" in df.columns else df
    if FEASIBLE in done.columns:
        done = done[done[FEASIBLE].astype("boolean").fillna(False).to_numpy(dtype=bool)]
    return done.dropna(subset=list(cols))


def pareto_front(df: pd.DataFrame, objectives: Optional[dict] = None) -> pd.DataFrame:
    """The non-dominated COMPLETE and feasible rows of ``df`` (from :func:`load_trials`; see
    :func:`feasible_complete`), sorted by the first objective: Optuna's ``study.best_trials``.
    ``objectives`` maps column -> direction; default ``df.attrs["objectives"]``."""
    objectives = objectives or df.attrs.get("objectives")
    if not objectives:
        raise ValueError("no objectives: pass objectives={column: direction} or use load_trials()")
    cols = list(objectives)
    done = feasible_complete(df, cols)
    if done.empty:
        out = done.copy()
    else:
        out = done[pareto_mask(done[cols].to_numpy(dtype=float), [objectives[c] for c in cols])]
        out = out.sort_values(cols[0], ascending=objectives[cols[0]] == "minimize")
    out.attrs = dict(df.attrs)
    return out


def front_size(study: optuna.Study) -> int:
    """How many trials of ``study`` (an Optuna study) are on its Pareto front: the non-dominated
    COMPLETE trials that satisfy every constraint, as :func:`pareto_front` of :func:`load_trials`
    counts them, read straight from the study (the progress lines, `nas studies`)."""
    rows = feasible_values(study)  # values only, read by two queries (nas/store/trial_rows.py)
    if not rows:
        return 0
    values = np.array(rows, dtype=float)
    return int(pareto_mask(values, [d.name.lower() for d in study.directions]).sum())


def flatten_arch(arch_json: str) -> dict:
    """Flattened, human-readable columns of an arch: depth, widths, per-layer mixers and params."""
    return dict(_flat_arch(arch_json))


@functools.lru_cache(maxsize=4096)
def _flat_arch(arch_json: str) -> dict:
    """:func:`flatten_arch`, once per architecture text (a study's repeats and twins share it; the
    caller copies the result)."""
    from search_spaces import ArchSpec, get_mixer_info, list_mixers

    d = json.loads(arch_json)
    arch = ArchSpec.from_dict(d)
    row = {
        "arch.stem": arch.stem.type,
        "arch.patch": arch.stem.patch,
        "arch.stride": arch.stem.effective_stride,
        "arch.causal": arch.causal,
        "arch.n_stages": len(arch.stages),
        "arch.depth": arch.depth,
        "arch.width": max(s.dim for s in arch.stages),
    }
    mixers = set(list_mixers())
    for si, stage in enumerate(arch.stages):
        row[f"arch.s{si}.dim"] = stage.dim
        row[f"arch.s{si}.depth"] = len(stage.blocks)
        row[f"arch.s{si}.downsample"] = stage.downsample
        for bi, block in enumerate(stage.blocks):
            p = f"arch.s{si}.b{bi}"
            row[f"{p}.mixer"] = block.mixer.type
            known = block.mixer.type in mixers
            params = {**(get_mixer_info(block.mixer.type).defaults() if known else {}), **block.mixer.params}
            for k, v in params.items():
                row[f"{p}.{k}"] = v
            row[f"{p}.ffn"] = block.ffn.type
            row[f"{p}.ffn_ratio"] = block.ffn.ratio
    row["arch.mixers"] = "+".join(sorted(set(arch.mixer_types())))
    # a study may hold mixers this installation no longer registers: no family for those
    row["arch.family"] = arch.dominant_family() if set(arch.mixer_types()) <= mixers else None
    return row


EXPORT_SUFFIXES = (".csv", ".parquet")


def _is_export(source) -> bool:
    """A path to a file written by `nas export` (not a storage URL)."""
    if isinstance(source, os.PathLike):
        return True
    return isinstance(source, str) and "://" not in source and source.lower().endswith(EXPORT_SUFFIXES)


def load_trials(source: Union[str, os.PathLike, optuna.storages.BaseStorage], study: Optional[str] = None) -> pd.DataFrame:
    """One row per trial of ``study``: number, state, arch_id, objective columns, every metric
    (params, flops, latency_ms, latency_spread, ...), ``feasible`` and one ``constraint.<name>``
    column per constraint, flattened arch columns, error, timing.

    ``source`` is an Optuna storage (URL or object), or a file written by ``nas export``
    (``.csv`` with its ``.csv.meta.json`` sidecar, or ``.parquet``), read back as exported; there
    ``study`` may be left out. ``df.attrs``: ``objectives`` (column -> direction), ``constraints``
    (constraint names, in column order), ``study``, ``config`` (the stored search config) and
    ``finished`` (the trials that count toward the budget, ``--trials``)."""
    if _is_export(source):
        from nas.results.files import read_export

        df = read_export(source)
        if study is not None and df.attrs.get("study") != study:
            from nas.errors import UserError

            raise UserError(f"{source} holds study {df.attrs.get('study')!r}, not {study!r}")
        return df
    if study is None:
        from nas.errors import UserError

        raise UserError("load_trials: name the study to read from a storage URL")
    return _load_from_storage(source, study)


def _load_from_storage(storage: Union[str, optuna.storages.BaseStorage], study: str) -> pd.DataFrame:
    from nas.store.storage import find_study, open_storage

    url = storage if isinstance(storage, str) else None
    if url is not None:
        storage = open_storage(url, create=False)
    return trials_frame(find_study(storage, study, url))


def trials_frame(st: optuna.Study) -> pd.DataFrame:
    """:func:`load_trials` of a study already loaded (a search's own, at its end; a command's)."""
    from nas.store.study import CONFIG_ATTR, count_finished

    metric_names = st.metric_names or [f"value{i}" for i in range(len(st.directions))]
    trials = results_trials(st)  # five queries, not Optuna's per-trial ORM read (nas/store/trial_rows.py)
    retries = retries_of(trials)  # once: each row and the budget count read it
    rows = [_trial_row(t, metric_names, retries) for t in trials]
    constraints = list(dict.fromkeys(k for t in trials for k in t.constraints))
    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame(columns=["number", "state", "arch_id", *metric_names, FEASIBLE, "error"])
    df[FEASIBLE] = df[FEASIBLE].astype("boolean")
    df.attrs["objectives"] = {n: d.name.lower() for n, d in zip(metric_names, st.directions)}
    df.attrs["constraints"] = constraints
    df.attrs["study"] = st.study_name
    df.attrs["finished"] = count_finished(trials, retries)
    cfg = st.user_attrs.get(CONFIG_ATTR)
    if cfg:
        df.attrs["config"] = json.loads(cfg)
    return df


def _feasible(t) -> bool:
    """Optuna's rule: every constraint value of ``t`` is <= 0 (a trial without constraints is feasible)."""
    return all(v <= 0 for v in t.constraints.values())


def _feasibility(t) -> dict:
    """``feasible`` (:func:`_feasible`; NA unless COMPLETE) and one ``constraint.<name>`` column per
    constraint the trial carries."""
    row = {FEASIBLE: _feasible(t) if t.state == TrialState.COMPLETE else None}
    row.update({CONSTRAINT_PREFIX + k: v for k, v in t.constraints.items()})
    return row


def _trial_row(t, metric_names: list, retries: Retries) -> dict:
    ua = t.user_attrs
    row = {"number": t.number, "state": t.state.name, "arch_id": ua.get(ARCH_ID_KEY), "summary": ua.get(SUMMARY_KEY)}
    values = t.values if t.state == TrialState.COMPLETE and t.values else [None] * len(metric_names)
    row.update(zip(metric_names, values))
    for k, v in metrics_of(t).items():
        row.setdefault(k, v)
    row.update(_feasibility(t))
    error = ua.get(ERROR_KEY)
    if t.state == TrialState.FAIL and not error:
        error = "worker stopped (heartbeat went stale) mid-trial"
        if t.number in retries.retried:
            error += f"; retried as trial {retries.retried_as.get(t.number)}"
    if t.state == TrialState.PRUNED and not error:
        error = ua.get(PRUNED_REASON_KEY)
    row["error"] = error
    row["ladder_stopped"] = ua.get(LADDER_STOPPED_KEY)
    row["baseline"] = ua.get(BASELINE_KEY)  # name of an enqueued reference design (nas/engine/baselines.py)
    row["reused_from"] = ua.get(REUSED_FROM_KEY)
    row["retried_as"] = retries.retried_as.get(t.number)
    row["duration_s"] = wall_seconds(t)
    row["datetime_start"] = t.datetime_start
    if ua.get(ARCH_KEY):
        row.update(flatten_arch(ua[ARCH_KEY]))
    row["arch_json"] = ua.get(ARCH_KEY)
    return row
