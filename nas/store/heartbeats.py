"""Trial heartbeats: beat for a running trial, and read how long ago each running trial last beat.

A running trial's process records a heartbeat every ``heartbeat_interval`` seconds in Optuna's
``trial_heartbeats`` table. A fresh heartbeat means a live process runs the trial (this one or
another, on this machine or not); one older than the grace period means that process died, and
Optuna fails the trial (``fail_stale_trials``), which the retry callback queues again.
"""

from __future__ import annotations

import threading
from typing import Optional

import optuna
import sqlalchemy as sa

from nas.store.optuna_access import engine, storage_of, study_id_of, trial_id_of

__all__ = ["Heartbeat", "heartbeat_ages"]

# Optuna's schema (the two tables and the columns read here), as lightweight SQLAlchemy constructs
_TRIALS = sa.table("trials", sa.column("trial_id"), sa.column("number"), sa.column("study_id"), sa.column("state"))
_BEATS = sa.table("trial_heartbeats", sa.column("trial_id"), sa.column("heartbeat", sa.DateTime))


def heartbeat_ages(study: optuna.Study) -> dict[int, Optional[float]]:
    """Seconds since each RUNNING trial's last heartbeat, by trial number, measured by the database's
    clock (as Optuna does); None for a trial that has not beaten yet."""
    query = (sa.select(_TRIALS.c.number, _BEATS.c.heartbeat)
             .select_from(_TRIALS.outerjoin(_BEATS, _TRIALS.c.trial_id == _BEATS.c.trial_id))
             # an untyped SQL literal: PostgreSQL's trials.state is an enum, which a bound VARCHAR
             # (as psycopg 3 sends it) does not compare with
             .where(_TRIALS.c.study_id == study_id_of(study), _TRIALS.c.state == sa.literal_column("'RUNNING'")))
    with engine(study).connect() as conn:
        now = conn.execute(sa.select(sa.func.now())).scalar().replace(tzinfo=None)
        rows = conn.execute(query).all()
    return {int(number): (None if beat is None else max(0.0, (now - beat).total_seconds()))
            for number, beat in rows}


class Heartbeat:
    """``with Heartbeat(study, trial):`` records the trial's heartbeat now and every ``interval``
    seconds from a daemon thread until the block ends. A failed beat (a busy database) is retried at
    the next one: a trial goes stale only after several missed beats."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, interval: float):
        self._storage = storage_of(study)
        self._trial_id = trial_id_of(trial)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"nas-heartbeat-{trial.number}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception:  # the trial finished meanwhile, or a transient database error
                pass

    def __enter__(self):
        self._storage.record_heartbeat(self._trial_id)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
