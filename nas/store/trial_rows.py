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

import optuna
import sqlalchemy as sa
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from nas.store.optuna_access import storage_of, study_id_of

__all__ = ["results_trials"]

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
