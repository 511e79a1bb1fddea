"""Every trial of a study, read for the results in a handful of queries.

``study.get_trials()`` on an RDB storage builds each trial through SQLAlchemy's ORM and decodes
every parameter's distribution from JSON: about 3 ms per trial on the 2-core VM, 29 s for a
10,000-trial study, which was most of ``nas pareto``'s time there (benchmarks/engine_scale.py). The
results need no parameters (a trial's architecture is in its user attributes), so
:func:`results_trials` reads the five tables they do need straight from Optuna's schema, one
query each, and builds the same ``FrozenTrial`` objects with ``params`` left empty. Another
storage (in memory, a journal file) is read with ``get_trials``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import Optional

import optuna
import sqlalchemy as sa
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from nas.store.optuna_access import storage_of, study_id_of
from nas.store.trial_attrs import (
    FAILED_TRIAL_KEY,
    INTERRUPTED_KEY,
    RETRY_HISTORY_KEY,
    RETRY_OF_KEY,
    Retries,
    retries_of,
)

__all__ = ["count_finished", "feasible_values", "finished_count", "results_trials", "trials_with_attr"]

# Optuna's schema: the tables and columns read here (checked against Optuna's own reading by
# tests/nas/store/test_trial_rows.py)
_TRIALS = sa.table("trials", sa.column("trial_id"), sa.column("number"), sa.column("study_id"), sa.column("state"),
                   sa.column("datetime_start", sa.DateTime), sa.column("datetime_complete", sa.DateTime))
_VALUES = sa.table("trial_values", sa.column("trial_id"), sa.column("objective"), sa.column("value"),
                   sa.column("value_type"))
_INTERMEDIATE = sa.table("trial_intermediate_values", sa.column("trial_id"), sa.column("step"),
                         sa.column("intermediate_value"), sa.column("intermediate_value_type"))
_USER = sa.table("trial_user_attributes", sa.column("trial_id"), sa.column("key"), sa.column("value_json"))
_SYSTEM = sa.table("trial_system_attributes", sa.column("trial_id"), sa.column("key"), sa.column("value_json"))
_STATES = {s.name: s for s in TrialState}
_STORED = {"INF_POS": math.inf, "INF_NEG": -math.inf, "NAN": math.nan}  # Optuna's value types; FINITE: the value


def results_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Every trial of ``study`` in number order, as ``study.get_trials(deepcopy=False)`` gives them
    but without ``params`` and ``distributions`` (empty): state, values, intermediate values, user
    and system attributes (so ``constraints``) and times."""
    backend = getattr(storage_of(study), "_backend", storage_of(study))
    if not isinstance(backend, RDBStorage):
        return study.get_trials(deepcopy=False)
    mine = sa.select(_TRIALS.c.trial_id).where(_TRIALS.c.study_id == study_id_of(study)).scalar_subquery()
    with backend.engine.connect() as conn:
        rows = conn.execute(sa.select(_TRIALS.c.trial_id, _TRIALS.c.number, _TRIALS.c.state, _TRIALS.c.datetime_start,
                                      _TRIALS.c.datetime_complete)
                            .where(_TRIALS.c.study_id == study_id_of(study)).order_by(_TRIALS.c.number)).all()
        values = _by_trial(conn, sa.select(_VALUES.c.trial_id, _VALUES.c.objective, _VALUES.c.value, _VALUES.c.value_type)
                           .where(_VALUES.c.trial_id.in_(mine)))
        steps = _by_trial(conn, sa.select(*_INTERMEDIATE.c).where(_INTERMEDIATE.c.trial_id.in_(mine)))
        user = _by_trial(conn, sa.select(*_USER.c).where(_USER.c.trial_id.in_(mine)))
        system = _by_trial(conn, sa.select(*_SYSTEM.c).where(_SYSTEM.c.trial_id.in_(mine)))
    return [_frozen(row, values[row[0]], steps[row[0]], user[row[0]], system[row[0]]) for row in rows]


def _by_trial(conn, query) -> defaultdict:
    """The rows of ``query`` grouped by their first column (the trial id), the rest of each row kept."""
    out: defaultdict = defaultdict(list)
    for trial_id, *rest in conn.execute(query):
        out[trial_id].append(rest)
    return out


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _value(value, kind) -> float:
    """A stored value as Optuna reads it back (infinities and NaN are stored as a type, not a value)."""
    kind = getattr(kind, "name", kind)
    return value if kind == "FINITE" else _STORED[kind]


def _frozen(row, values, steps, user, system) -> FrozenTrial:
    trial_id, number, state, start, complete = row
    state = _STATES[getattr(state, "name", state)]
    objective = [_value(v, kind) for _, v, kind in sorted(values)] or None
    return FrozenTrial(number=number, state=state, value=None, values=objective, datetime_start=start,
                       datetime_complete=complete, params={}, distributions={},
                       user_attrs={key: json.loads(text) for key, text in user},
                       system_attrs={key: json.loads(text) for key, text in system},
                       intermediate_values={step: _value(v, kind) for step, v, kind in steps}, trial_id=trial_id)


def count_finished(trials, retries: Optional[Retries] = None) -> int:
    """:func:`budget_count` of a list of trials already read (and their :func:`~nas.store.trial_attrs.retries_of`,
    when the caller has it)."""
    retried = (retries or retries_of(trials)).retried
    n = 0
    for t in trials:
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            n += 1
        elif t.state == TrialState.FAIL and t.number not in retried and not t.user_attrs.get(INTERRUPTED_KEY):
            n += 1
    return n


def finished_count(study: optuna.Study) -> int:
    """:func:`nas.store.study.count_finished` of ``study`` without reading every trial: COMPLETE and
    PRUNED trials counted by the database, and only the FAIL trials and those with retry bookkeeping
    read (with just those attributes), so a trial's start costs the same in a study of 100 trials
    and one of 10,000."""

    backend = getattr(storage_of(study), "_backend", storage_of(study))
    if not isinstance(backend, RDBStorage):
        return count_finished(study.get_trials(deepcopy=False))
    study_id = study_id_of(study)
    mine = sa.select(_TRIALS.c.trial_id).where(_TRIALS.c.study_id == study_id).scalar_subquery()
    user = sa.select(_USER.c.trial_id).where(_USER.c.key.in_([RETRY_OF_KEY, INTERRUPTED_KEY]), _USER.c.trial_id.in_(mine))
    system = sa.select(_SYSTEM.c.trial_id).where(_SYSTEM.c.key.in_([FAILED_TRIAL_KEY, RETRY_HISTORY_KEY]),
                                                 _SYSTEM.c.trial_id.in_(mine))
    fail = sa.literal_column("'FAIL'")  # untyped: PostgreSQL's state is an enum (see nas/store/heartbeats.py)
    done = sa.literal_column("'COMPLETE'"), sa.literal_column("'PRUNED'")
    with backend.engine.connect() as conn:
        counted = conn.execute(sa.select(sa.func.count()).select_from(_TRIALS)
                               .where(_TRIALS.c.study_id == study_id, _TRIALS.c.state.in_(done))).scalar()
        rows = conn.execute(sa.select(_TRIALS.c.trial_id, _TRIALS.c.number, _TRIALS.c.state, _TRIALS.c.datetime_start,
                                      _TRIALS.c.datetime_complete)
                            .where(_TRIALS.c.study_id == study_id,
                                   sa.or_(_TRIALS.c.state == fail, _TRIALS.c.trial_id.in_(user),
                                          _TRIALS.c.trial_id.in_(system)))).all()
        ids = [row[0] for row in rows]
        attrs = [_by_trial(conn, sa.select(*table.c).where(table.c.trial_id.in_(ids), table.c.key.in_(keys)))
                 for table, keys in ((_USER, [RETRY_OF_KEY, INTERRUPTED_KEY]),
                                     (_SYSTEM, [FAILED_TRIAL_KEY, RETRY_HISTORY_KEY]))] if ids else [{}, {}]
    few = [_frozen(row, [], [], attrs[0].get(row[0], []), attrs[1].get(row[0], [])) for row in rows]
    return counted + count_finished([t for t in few if t.state == TrialState.FAIL], retries_of(few))


def trials_with_attr(study: optuna.Study, key: str, value) -> list[FrozenTrial]:
    """The trials of ``study`` whose user attribute ``key`` is ``value``, in number order: found by
    the database (one query), then each read whole (the duplicate-architecture lookup of each trial,
    :meth:`nas.engine.objective.Objective.twin`, without reading the study)."""
    storage = storage_of(study)
    backend = getattr(storage, "_backend", storage)
    if not isinstance(backend, RDBStorage):
        return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(key) == value]
    query = (sa.select(_TRIALS.c.trial_id).select_from(_TRIALS.join(_USER, _TRIALS.c.trial_id == _USER.c.trial_id))
             .where(_TRIALS.c.study_id == study_id_of(study), _USER.c.key == key,
                    _USER.c.value_json == json.dumps(value)).order_by(_TRIALS.c.number))
    with backend.engine.connect() as conn:
        ids = conn.execute(query).scalars().all()
    return [storage.get_trial(trial_id) for trial_id in ids]


def feasible_values(study: optuna.Study) -> list[list[float]]:
    """The objective values of the COMPLETE trials of ``study`` that satisfy every constraint
    (Optuna's rule: each constraint value <= 0), read in two queries (the front size on each
    progress line, :func:`nas.results.trials.front_size`)."""
    backend = getattr(storage_of(study), "_backend", storage_of(study))
    if not isinstance(backend, RDBStorage):
        return [t.values for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if all(v <= 0 for v in t.constraints.values())]
    done = sa.select(_TRIALS.c.trial_id).where(_TRIALS.c.study_id == study_id_of(study),
                                               _TRIALS.c.state == sa.literal_column("'COMPLETE'")).scalar_subquery()
    with backend.engine.connect() as conn:
        values = _by_trial(conn, sa.select(_VALUES.c.trial_id, _VALUES.c.objective, _VALUES.c.value, _VALUES.c.value_type)
                           .where(_VALUES.c.trial_id.in_(done)))
        # Optuna keeps a constraint as key "constraints:<name>" (and in older studies, all of them
        # as one list under "constraints")
        system = _by_trial(conn, sa.select(*_SYSTEM.c).where(_SYSTEM.c.trial_id.in_(done), sa.or_(
            _SYSTEM.c.key == "constraints", _SYSTEM.c.key.like("constraints:%"))))
    infeasible = {i for i, rows in system.items()
                  if any(v > 0 for _, text in rows for v in _as_list(json.loads(text)))}
    return [[_value(v, kind) for _, v, kind in sorted(rows)] for i, rows in values.items() if i not in infeasible]
