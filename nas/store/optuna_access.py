"""The one place that reaches past Optuna's public API.

Optuna has no public handle on a study's storage, on a trial's id in it, on the SQLAlchemy
engine under an RDB storage, or on an open storage's heartbeat settings, and the engine needs them:
heartbeats and the budget's lock (:mod:`nas.store.heartbeats`, :mod:`nas.engine.budget`), the
latency tables kept in the study's database, fresh reads of a trial that another thread or process
may have finished meanwhile, and a study's own heartbeat settings, set on the storage its config
was read from (:mod:`nas.store.study`). Each is one function here, so an Optuna release that moves
them breaks this file only (``tests/nas/store/test_trial_attrs.py`` checks them against Optuna's
own objects).
"""

from __future__ import annotations

from typing import Callable, Optional

import optuna
import sqlalchemy as sa
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial

__all__ = ["engine", "fresh_trial", "set_heartbeat", "set_user_attrs", "storage_of", "study_id_of", "trial_id_of"]


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage ``study`` reads and writes (for an RDB URL, Optuna's cache around the RDBStorage)."""
    return study._storage


def study_id_of(study: optuna.Study) -> int:
    """The study's id in its storage."""
    return study._study_id


def trial_id_of(trial: optuna.Trial) -> int:
    """The trial's id in its study's storage (not its number)."""
    return trial._trial_id


def fresh_trial(study: optuna.Study, trial: optuna.Trial) -> FrozenTrial:
    """``trial`` as stored now: its state and attributes, read past Optuna's per-trial cache."""
    return storage_of(study).get_trial(trial_id_of(trial))


def set_user_attrs(trial: optuna.Trial, attrs: dict) -> None:
    """Store ``attrs`` as user attributes of the running ``trial``, as ``set_user_attr`` does key by
    key, but in one transaction on an RDB storage: Optuna commits each key on its own (about 20 ms
    apiece on a busy disk), and a trial stores each of its metrics as an attribute. Other storages
    (and a ``FrozenTrial``) are written one key at a time."""
    storage = storage_of(trial.study) if isinstance(trial, optuna.Trial) else None
    backend = getattr(storage, "_backend", storage)
    if not isinstance(backend, RDBStorage):
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    from optuna.storages._rdb.models import TrialUserAttributeModel
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(backend.scoped_session, True) as session:
        for key, value in attrs.items():
            backend._set_trial_attr_without_commit(session, TrialUserAttributeModel, trial_id_of(trial), key, value)
    trial._cached_frozen_trial.user_attrs.update(attrs)  # what trial.user_attrs reads, as set_user_attr keeps it


def engine(study: optuna.Study) -> sa.engine.Engine:
    """The SQLAlchemy engine of a study in an RDB storage (Optuna wraps the RDBStorage in a cache)."""
    storage = storage_of(study)
    return getattr(storage, "_backend", storage).engine


def set_heartbeat(storage: RDBStorage, interval: Optional[int], grace_period: Optional[int],
                  callback: Optional[Callable[[optuna.Study, FrozenTrial], None]]) -> None:
    """Heartbeat settings of an open ``storage``, as ``RDBStorage(heartbeat_interval=...,
    grace_period=..., heartbeat_stale_trial_callback=...)`` would set them: a study's settings are
    stored in the study, so they are known only once the storage is open (and it is opened once)."""
    storage.heartbeat_interval = interval
    storage.grace_period = grace_period
    storage.heartbeat_stale_trial_callback = callback
    storage.failed_trial_callback = callback  # Optuna's older name of the same setting (until 6.0)
