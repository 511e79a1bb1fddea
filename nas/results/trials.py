"""Results as pandas: one row per trial, and the Pareto front as a pure function (the dominance
rule and which rows count: :mod:`nas.results.dominance`; what is known of the front:
:mod:`nas.results.uncertainty`)."""

from __future__ import annotations

import functools
import json
import os
from typing import Optional, Sequence, Union

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from nas.results.dominance import FEASIBLE, as_minimized, excluded_counts, feasible_complete, pareto_mask
from nas.results.floors import beats
from nas.results.uncertainty import P_FRONT, UNRESOLVED, p_front, unresolved_with
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
    WORKER_DIED_KEY,
    metrics_of,
    retries_of,
    wall_seconds,
)
from nas.store.confirmations import confirmed_metrics
from nas.store.trial_rows import feasible_values, results_trials

__all__ = ["load_trials", "trials_frame", "pareto_front", "pareto_mask", "as_minimized", "confirmed_columns",
           "flatten_arch", "feasible_complete", "excluded_counts", "front_size", "CONSTRAINT_PREFIX", "FEASIBLE"]

CONSTRAINT_PREFIX = "constraint."  # one column per constraint: Optuna's value (<= 0 satisfied, > 0 violation)


def pareto_front(df: pd.DataFrame, objectives: Optional[dict] = None, *, floors: Optional[dict] = None,
                 samples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The non-dominated COMPLETE and feasible rows of ``df`` (from :func:`load_trials`; see
    :func:`feasible_complete`) that beat the study's floors, sorted by the first objective: without
    floors, Optuna's ``study.best_trials``. ``objectives`` maps column -> direction; default
    ``df.attrs["objectives"]``; ``floors`` default the study's (``{}``: none).

    Two columns say what is known (:mod:`nas.results.uncertainty`): ``p_front``, the probability
    that the trial is non-dominated under its measured uncertainty (``samples`` draws seeded with
    ``seed``), and ``unresolved_with``, the trials that could dominate it within their 95% intervals."""
    objectives = objectives or df.attrs.get("objectives")
    if not objectives:
        raise ValueError("no objectives: pass objectives={column: direction} or use load_trials()")
    cols = list(objectives)
    done = feasible_complete(df, cols, floors)
    if done.empty:
        out = done.copy()
    else:
        out = done[pareto_mask(done[cols].to_numpy(dtype=float), [objectives[c] for c in cols])]
        out = out.sort_values(cols[0], ascending=objectives[cols[0]] == "minimize")
    p = p_front(df, objectives=objectives, floors=floors, samples=samples, seed=seed) if len(out) else None
    out[P_FRONT] = p.reindex(out.index) if p is not None else pd.Series(dtype=float)
    out[UNRESOLVED] = unresolved_with(df, objectives, floors=floors).reindex(out.index)
    out.attrs = dict(df.attrs)
    return out


def front_size(study: optuna.Study) -> int:
    """How many trials of ``study`` (an Optuna study) are on its Pareto front: the non-dominated
    COMPLETE trials that satisfy every constraint and beat every floor, as :func:`pareto_front` of
    :func:`load_trials` counts them, read straight from the study (the progress lines, `nas studies`):
    their values only, in two queries (nas/store/trial_rows.py), unless the study has floors, which
    need each trial's metrics."""
    floors = _study_floors(study)
    if floors:
        names = study.metric_names or [f"value{i}" for i in range(len(study.directions))]
        trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if _feasible(t)]
        rows = [t.values for t in trials if _beats(t, names, floors)]
    else:
        rows = feasible_values(study)
    if not rows:
        return 0
    values = np.array(rows, dtype=float)
    return int(pareto_mask(values, [d.name.lower() for d in study.directions]).sum())


def _study_floors(study: optuna.Study) -> dict:
    """The floors stored with ``study``'s search config ({} for none, or no config)."""
    from nas.store.study import CONFIG_ATTR

    raw = study.user_attrs.get(CONFIG_ATTR)
    return dict(json.loads(raw).get("floors") or {}) if raw else {}


def _beats(t, names: list, floors: dict) -> bool:
    """Whether the trial ``t`` (its values named ``names``, then its metrics) beats every floor."""
    values = {**metrics_of(t), **dict(zip(names, t.values or ()))}
    return all(bool(beats(np.asarray(values.get(m, np.nan), dtype=float), f)) for m, f in floors.items())


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
    column per constraint, flattened arch columns, error, timing. A trial ``nas confirm``
    re-evaluated (``confirmed`` True) holds its confirmed values (:func:`confirmed_columns`).

    ``source`` is an Optuna storage (URL or object), or a file written by ``nas export``
    (``.csv`` with its ``.csv.meta.json`` sidecar, or ``.parquet``), read back as exported; there
    ``study`` may be left out. ``df.attrs``: ``objectives`` (column -> direction), ``constraints``
    (constraint names, in column order), ``study``, ``config`` (the stored search config) and
    ``finished`` (the trials that count toward the budget, ``--trials``)."""
    from nas.errors import UserError

    if not isinstance(source, (str, os.PathLike, optuna.storages.BaseStorage)):
        raise UserError(f"load_trials: {source!r} is not allowed (a storage URL, a storage or an exported file)")
    if study is not None and not isinstance(study, str):
        raise UserError(f"load_trials: study {study!r} is not allowed (a study name)")
    if _is_export(source):
        from nas.results.files import read_export

        df = read_export(source)
        if study is not None and df.attrs.get("study") != study:
            raise UserError(f"{source} holds study {df.attrs.get('study')!r}, not {study!r}")
        return df
    if study is None:
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
    confirmed = confirmed_metrics(st.user_attrs)
    rows = [_trial_row(t, metric_names, retries, confirmed.get(t.number)) for t in trials]
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


def confirmed_columns(row: dict, confirmed: Optional[dict]) -> dict:
    """The columns ``nas confirm`` changes in a trial's ``row``: ``confirmed`` (whether it was
    confirmed) and, when it was, each confirmed metric in its own column (the objectives too), the
    value the search stored kept as ``<m>_first``."""
    out = {"confirmed": confirmed is not None}
    for k, v in (confirmed or {}).items():
        if k in row:
            out[f"{k}_first"] = row[k]
        out[k] = v
    return out


def _feasible(t) -> bool:
    """Optuna's rule: every constraint value of ``t`` is <= 0 (a trial without constraints is feasible)."""
    return all(v <= 0 for v in t.constraints.values())


def _feasibility(t) -> dict:
    """``feasible`` (:func:`_feasible`; NA unless COMPLETE) and one ``constraint.<name>`` column per
    constraint the trial carries."""
    row = {FEASIBLE: _feasible(t) if t.state == TrialState.COMPLETE else None}
    row.update({CONSTRAINT_PREFIX + k: v for k, v in t.constraints.items()})
    return row


def _trial_row(t, metric_names: list, retries: Retries, confirmed: Optional[dict] = None) -> dict:
    ua = t.user_attrs
    row = {"number": t.number, "state": t.state.name, "arch_id": ua.get(ARCH_ID_KEY), "summary": ua.get(SUMMARY_KEY)}
    values = t.values if t.state == TrialState.COMPLETE and t.values else [None] * len(metric_names)
    row.update(zip(metric_names, values))
    for k, v in metrics_of(t).items():
        row.setdefault(k, v)
    row.update(confirmed_columns(row, confirmed))
    row.update(_feasibility(t))
    error = ua.get(ERROR_KEY)
    if t.state == TrialState.FAIL and (not error or ua.get(WORKER_DIED_KEY)):  # its process died
        error = error or "worker stopped (heartbeat went stale) mid-trial"
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
