"""The names of what mixer-nas stores on Optuna trials and studies, and small readers for them.

Every key is JSON-primitive data (the study is the system of record, CONVENTIONS.md). Trial user
attributes, written by :mod:`nas.engine.objective` and the backends:

=====================  ===================================================================
``arch_id``            short hash of the ArchSpec's canonical JSON
``arch``               the ArchSpec's canonical JSON
``summary``            one-line description of the architecture
``metrics``            every metric ``evaluate()`` returned (``{name: value}``)
``metric.<name>``      each of those metrics again, on its own (:func:`metric_attr`), so optuna-dashboard's
                       trial table shows and sorts it; ``metrics`` stays the record that is read back
``constraints``        Optuna constraint values by name (<= 0: satisfied)
``fixed_arch``         set when enqueuing: an ArchSpec JSON evaluated instead of sampling
``baseline``           set when enqueuing a reference design: its name (:mod:`nas.engine.baselines`)
``reused_from``        number of the trial of the same architecture whose outcome was reused
``error``              why the trial failed (one line); PRUNED trials say why in ``pruned_reason``
``interrupted``        stopped by Ctrl-C, SIGTERM or SIGHUP (queued again; not the arch's outcome)
``retry_of``           number of the interrupted trial this one runs again
``ladder_*``           the fidelity ladder: scores per rung, rungs passed, the rung that stopped it
``worker``, ``driver`` where a Ray trial ran (node, pid, waits) and which search process asked it
``worker_died``        the process running it died: a Ray worker, or a run whose heartbeat went stale
                       (not the arch's outcome: never reused)
``pruned_*``           the Ray scheduler's stop: step, loss
=====================  ===================================================================

A trial's wall time is Optuna's own record of it, read with :func:`wall_seconds`.

Trial system attributes ``failed_trial`` and ``retry_history`` are Optuna's own (its heartbeat
retry callback writes them; the Ray searcher writes them the same way for a trial whose worker
died); read them with :func:`retry_history` for one trial, and with :func:`retries_of` for a study's
trials (which trial runs which again), in one pass. Study user attributes: :data:`CONFIG_ATTR` (the
:class:`~nas.engine.config.SearchConfig` JSON) and :data:`ENV_ATTR` (the machine it was measured on).

What ``nas confirm`` finds is stored as study user attributes, since Optuna never changes a finished
trial (its values and attributes included): ``confirmed_metrics:<number>`` (:data:`CONFIRMED_KEY`, the
trial's confirmed metrics, in the names of ``metrics``), the pass under way (:data:`CONFIRM_PASS_ATTR`)
and what it has measured so far (:data:`CONFIRM_RUN_ATTR`, :data:`CONFIRM_TIMING_ATTR`);
:mod:`nas.store.confirmations` writes and reads them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Iterable, Optional

from optuna.exceptions import ExperimentalWarning
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

__all__ = [
    "METRIC_ATTR_PREFIX", "metric_attr", "metric_attrs", "stale_outcome",
    "ARCH_ID_KEY", "ARCH_KEY", "BASELINE_KEY", "CONFIG_ATTR", "CONFIRMED_KEY", "CONFIRM_PASS_ATTR", "CONFIRM_RUN_ATTR",
    "CONFIRM_TIMING_ATTR", "CONSTRAINTS_KEY", "DRIVER_KEY", "ENV_ATTR",
    "ERROR_KEY", "FAILED_TRIAL_KEY", "FIXED_ARCH_KEY", "INTERRUPTED_KEY", "LADDER_PASSED_KEY", "LADDER_STOPPED_KEY",
    "LADDER_VALUES_KEY", "METRICS_KEY", "OUTCOME_KEYS", "PRUNED_AT_STEP_KEY", "PRUNED_LOSS_KEY", "PRUNED_REASON_KEY",
    "RETRY_HISTORY_KEY", "RETRY_OF_KEY", "REUSED_FROM_KEY", "SUMMARY_KEY", "WORKER_DIED_KEY", "WORKER_KEY",
    "Retries", "error_of", "metrics_of", "retries_of", "retry_history", "wall_seconds",
]

# study user attributes
CONFIG_ATTR = "mixer_nas.config"
ENV_ATTR = "mixer_nas.environment"
# confirmation (nas confirm; each with ":<pass>:..." or ":<number>" after it, nas.store.confirmations)
CONFIRMED_KEY = "confirmed_metrics"  # a trial's confirmed metrics; its first ones stay in METRICS_KEY
CONFIRM_PASS_ATTR = "mixer_nas.confirm"  # the latest pass: its number, candidates, seeds, rounds, done
CONFIRM_RUN_ATTR = "mixer_nas.confirm.run"  # one extra seed's metrics (or error) of one candidate
CONFIRM_TIMING_ATTR = "mixer_nas.confirm.timing"  # one profile's paired timing of every candidate

# trial user attributes: the candidate
ARCH_ID_KEY = "arch_id"
ARCH_KEY = "arch"
SUMMARY_KEY = "summary"
FIXED_ARCH_KEY = "fixed_arch"
BASELINE_KEY = "baseline"
# its outcome
METRICS_KEY = "metrics"
METRIC_ATTR_PREFIX = "metric."  # + a metric's name: that metric as an attribute of its own (no other key has a dot)
CONSTRAINTS_KEY = "constraints"
REUSED_FROM_KEY = "reused_from"
ERROR_KEY = "error"
INTERRUPTED_KEY = "interrupted"
RETRY_OF_KEY = "retry_of"
LADDER_VALUES_KEY = "ladder_values"
LADDER_PASSED_KEY = "ladder_passed"
LADDER_STOPPED_KEY = "ladder_stopped"
PRUNED_REASON_KEY = "pruned_reason"
# the Ray backend
WORKER_KEY = "worker"
WORKER_DIED_KEY = "worker_died"
DRIVER_KEY = "driver"
PRUNED_AT_STEP_KEY = "pruned_at_step"
PRUNED_LOSS_KEY = "pruned_loss"

# what a trial's run writes about its outcome: a retried trial inherits its predecessor's user
# attributes, so these are cleared before it runs (the candidate's keys are written afresh)
OUTCOME_KEYS = (ERROR_KEY, METRICS_KEY, REUSED_FROM_KEY, INTERRUPTED_KEY, CONSTRAINTS_KEY, LADDER_VALUES_KEY,
                LADDER_PASSED_KEY, LADDER_STOPPED_KEY, PRUNED_REASON_KEY, WORKER_DIED_KEY)

# trial system attributes: Optuna's retry bookkeeping (RetryHeartbeatStaleTrialCallback writes these
# two keys; the Ray searcher writes them the same way when it queues a dead worker's trial again)
FAILED_TRIAL_KEY = "failed_trial"
RETRY_HISTORY_KEY = "retry_history"

# Optuna warns on every call of the reader below (experimental since 3.0, unchanged since); a
# filter, not catch_warnings(), which is not thread-safe (heartbeat threads, the Ray searcher)
warnings.filterwarnings("ignore", message=r".*RetryHeartbeatStaleTrialCallback\.retry_history is experimental",
                        category=ExperimentalWarning)


def retry_history(trial: FrozenTrial) -> list[int]:
    """Numbers of the trials ``trial`` runs again, the first one first; [] if it is no retry."""
    return list(RetryHeartbeatStaleTrialCallback.retry_history(trial))


@dataclass(frozen=True)
class Retries:
    """Which trials of a study run which again (:func:`retries_of`)."""

    # trials failed because their process or Ray worker died, and queued again (Optuna's retry_history)
    retried: frozenset = frozenset()
    # trial number -> the number of the trial that runs it again: after its process died, or after a
    # stop signal interrupted it (``retry_of``)
    retried_as: dict = field(default_factory=dict)


def retries_of(trials: Iterable[FrozenTrial]) -> Retries:
    """The retry bookkeeping of ``trials`` (a study's), read in one pass: each trial is the retry of
    the last trial in its :func:`retry_history` (the one right before it in its series), else of its
    ``retry_of`` trial. A heartbeat retry inherits its predecessor's user attributes, ``retry_of``
    among them, so its own history comes first."""
    retried, retried_as = set(), {}
    for t in trials:
        history = retry_history(t)
        retried.update(history)
        before = history[-1] if history else t.user_attrs.get(RETRY_OF_KEY)
        if before is not None:
            retried_as[before] = t.number
    return Retries(frozenset(retried), retried_as)


def error_of(trial: FrozenTrial) -> Optional[str]:
    """Why ``trial`` failed (FAIL) or was stopped (PRUNED), as stored; None if nothing is stored."""
    return trial.user_attrs.get(ERROR_KEY) or trial.user_attrs.get(PRUNED_REASON_KEY)


def metrics_of(trial: FrozenTrial) -> dict:
    """Every metric stored on ``trial`` (``{}`` if it stored none)."""
    return trial.user_attrs.get(METRICS_KEY) or {}


def wall_seconds(trial: FrozenTrial) -> Optional[float]:
    """``trial``'s wall time in seconds: from Optuna's ``datetime_start`` (when it was asked) to its
    ``datetime_complete`` (when it was told), so the same span whichever backend ran it; None until it
    finished. The one definition: the ``duration_s`` column of ``nas.load_trials`` and every sum of
    trial times read it."""
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def stale_outcome(user_attrs: dict) -> dict:
    """What to write over the outcome a retried trial inherited in ``user_attrs`` from the trial it
    runs again: None for each of :data:`OUTCOME_KEYS` present, NaN for each per-metric attribute
    (a number still: optuna-dashboard sorts a column only while every trial's value is one)."""
    stale = {k: None for k in OUTCOME_KEYS if k in user_attrs}
    stale.update({k: float("nan") for k in user_attrs if k.startswith(METRIC_ATTR_PREFIX)})
    return stale


def metric_attr(name: str) -> str:
    """The user attribute holding metric ``name`` on its own: ``metric.<name>``."""
    return METRIC_ATTR_PREFIX + name


def metric_attrs(trial: FrozenTrial) -> dict:
    """``{name: value}`` of the per-metric attributes of ``trial`` (:func:`metric_attr`)."""
    n = len(METRIC_ATTR_PREFIX)
    return {k[n:]: v for k, v in trial.user_attrs.items() if k.startswith(METRIC_ATTR_PREFIX)}
