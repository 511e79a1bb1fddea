"""The budget with several processes on one study: start a trial only while there is room for it,
and tell the trials of a live run from those a dead run left RUNNING.

Any number of ``nas search`` / ``nas resume`` processes (local or Ray backend, on one machine or
several sharing a PostgreSQL study) may work on one study. Each starts a trial only while

    finished trials (as ``budget_count`` counts them) + RUNNING trials < budget,

counted and asked under the study's lock (:mod:`nas.store.study_lock`), so the study ends with exactly its
budget. A RUNNING trial's heartbeat says whose it is: a fresh one belongs to a live process (left to
it; a process that finds no room waits for it to finish), one silent for longer than the grace period
to a process that died, and is failed and queued again once (Optuna's retry callback), its retry
counting for the budget instead.

A process that dies mid-trial says nothing: the kernel's out-of-memory killer or ``kill -9`` leave
no message. Such a trial is failed with the reason (:data:`DIED`, in ``error``) and marked
``worker_died`` (not the architecture's outcome: a twin runs itself), and it is run again at most
``max_retry`` times (1): Optuna's retry callback counts the retries of a chain in the trial's
``retry_history``, which its retry inherits, so the bound holds across resumes; a trial whose
retries are spent counts for the budget, so a study whose trials keep dying still reaches it. Each
run says at its start how many trials the study lost this way (:func:`report_running`), and so
does `nas status`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Optional

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from nas.engine import interrupts
from nas.engine.config import SearchConfig
from nas.store.heartbeats import heartbeat_ages
from nas.store.optuna_access import engine, fresh_trial, storage_of, study_id_of, trial_id_of
from nas.store.study_lock import study_lock
from nas.store.trial_attrs import ARCH_ID_KEY, ERROR_KEY, INTERRUPTED_KEY, RETRY_OF_KEY, WORKER_DIED_KEY, retries_of
from nas.store.trial_rows import finished_count

__all__ = ["DIED", "Slot", "abandon", "ask_within_budget", "fail_dead_trials", "lost_summary", "lost_trials",
           "report_running", "requeue_interrupted"]

# the error of a trial whose process died (no heartbeat for longer than the grace period)
DIED = ("the process running it died (killed by the OS, e.g. out of memory, or stopped by kill -9 or a crash): "
        "no heartbeat for over {grace}s")


@dataclass
class Slot:
    """What :func:`ask_within_budget` found: the trial it started (None when there was no room),
    the finished count and the trials RUNNING before it asked (number -> heartbeat age in seconds)."""

    trial: Optional[optuna.Trial]
    finished: int
    running: dict[int, Optional[float]] = field(default_factory=dict)


def ask_within_budget(study: optuna.Study, config: SearchConfig, log=print) -> Slot:
    """Start a trial (a queued retry first) if finished + running trials are below the budget,
    recording its first heartbeat before the study's lock is released. A stop signal that arrives
    meanwhile is raised once the trial is recorded FAIL (interrupted) and queued again."""
    fail_dead_trials(study, config, log)
    slot = Slot(None, 0)
    try:
        with interrupts.deferred(), study_lock(engine(study), study.study_name):
            # counted in the database, not by reading every trial: flat in the study's size
            slot.finished = finished_count(study)
            slot.running = heartbeat_ages(study)  # every RUNNING trial, by number
            if slot.finished + len(slot.running) < config.trials:
                with warnings.catch_warnings():  # heartbeats are ours (nas.store.heartbeats), not Study.optimize's
                    warnings.simplefilter("ignore", UserWarning)
                    slot.trial = study.ask()
                storage_of(study).record_heartbeat(trial_id_of(slot.trial))
    except KeyboardInterrupt as e:
        if slot.trial is not None:
            abandon(study, [slot.trial], e)
        raise
    return slot


def fail_dead_trials(study: optuna.Study, config: SearchConfig, log=print, *, say_lost: bool = True) -> bool:
    """Fail the RUNNING trials whose heartbeat is older than the grace period (their process died;
    the retry callback queues each again once), say what became of each and, unless ``say_lost`` is
    False (the caller says it), how many trials the study has lost to a dead process so far: a run
    that finds a dead trial only after it started says so too. A trial that never beat (its process
    died between starting it and its first heartbeat) gets a heartbeat now, so it ages out like the
    others. Returns whether it failed any."""
    ages = heartbeat_ages(study)
    if not ages:
        return False
    storage = storage_of(study)
    for number, age in ages.items():
        if age is None:
            storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id_of(study), number))
    stale = [n for n, age in ages.items() if age is not None and age > config.grace_period]
    if not stale:
        return False
    reason = DIED.format(grace=config.grace_period)
    _mark(study, stale, {ERROR_KEY: reason, WORKER_DIED_KEY: True})  # before failing: a finished trial is read-only
    optuna.storages.fail_stale_trials(study)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    retried_as = retries_of(trials.values()).retried_as
    _mark(study, [n for n in stale if trials[n].state == TrialState.RUNNING], {ERROR_KEY: None, WORKER_DIED_KEY: None})
    for n in stale:
        t = trials[n]
        name = f"trial #{n}" + (f" ({t.user_attrs[ARCH_ID_KEY]})" if t.user_attrs.get(ARCH_ID_KEY) else "")
        dead = f"no heartbeat for {ages[n]:.0f}s (over {config.grace_period}s: the run that owned it died), failed"
        if t.state == TrialState.RUNNING:  # it beat again meanwhile: alive after all (unmarked above)
            continue
        if t.state != TrialState.FAIL or t.user_attrs.get(ERROR_KEY) != reason:
            log(f"{name}: finished by its own run ({t.state.name})")
        elif n in retried_as:
            log(f"{name}: {dead}; queued again as #{retried_as[n]}")
        else:
            log(f"{name}: {dead}; not queued again (already retried {config.max_retry} time(s))")
    lost = lost_summary(study.get_trials(deepcopy=False), config.max_retry) if say_lost else None
    if lost:
        log(lost)
    return True


def _mark(study: optuna.Study, numbers: list, attrs: dict) -> None:
    """Set ``attrs`` on the trials ``numbers`` that are still unfinished (None clears a key)."""
    storage = storage_of(study)
    for n in numbers:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id_of(study), n)
        try:
            for key, value in attrs.items():
                storage.set_trial_user_attr(trial_id, key, value)
        except UpdateFinishedTrialError:  # its own run finished it meanwhile
            pass


def lost_trials(trials) -> list:
    """The FAIL trials among ``trials`` whose process died mid-trial (a dead local run, found by
    its stale heartbeat, or a dead Ray worker): not an outcome of their architecture."""
    return [t for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get(INTERRUPTED_KEY)
            and (t.user_attrs.get(WORKER_DIED_KEY) or not t.user_attrs.get(ERROR_KEY))]


def lost_summary(trials, max_retry: int) -> Optional[str]:
    """One line on the trials the study lost to a dead process, and what became of each; None if none."""
    lost = lost_trials(trials)
    if not lost:
        return None
    retried_as = retries_of(trials).retried_as
    each = ", ".join(f"#{t.number} (queued again as #{retried_as[t.number]})" if t.number in retried_as
                     else f"#{t.number} (not queued again)" for t in lost)
    return (f"{len(lost)} trial(s) lost to a dead process (killed by the OS, e.g. out of memory): {each}; "
            f"a trial whose process died runs again at most {max_retry} time(s)")


def report_running(study: optuna.Study, config: SearchConfig, log=print) -> None:
    """At the start of a run: fail the trials dead runs left RUNNING, say which RUNNING trials
    belong to a live run (heartbeat fresh) and are left to it, and how many trials the study lost
    to a dead process."""
    fail_dead_trials(study, config, log, say_lost=False)
    live = heartbeat_ages(study)
    if live:
        beats = ", ".join(f"#{n} ({'no heartbeat yet' if a is None else f'heartbeat {a:.0f}s ago'})"
                          for n, a in sorted(live.items()))
        log(f"{len(live)} trial(s) RUNNING in another run with a live heartbeat: {beats}; left to that run "
            f"(if it has died, they are failed and queued again once silent for {config.grace_period}s)")
    lost = lost_summary(study.get_trials(deepcopy=False), config.max_retry)
    if lost:
        log(lost)


def abandon(study: optuna.Study, trials: list, exc: BaseException) -> list[int]:
    """This process stops (``exc``: Ctrl-C or a stop signal) with ``trials`` unfinished: record each
    FAIL (``interrupted``) and queue each again with the same parameters. Returns their numbers."""
    reason = f"interrupted by {interrupts.describe(exc)}; queued again for the next run"
    numbers = []
    for trial in trials:
        if fresh_trial(study, trial).state != TrialState.RUNNING:
            continue
        trial.set_user_attr(INTERRUPTED_KEY, True)
        trial.set_user_attr(ERROR_KEY, reason)
        study.tell(trial, state=TrialState.FAIL)
        numbers.append(trial.number)
    requeue_interrupted(study)
    return numbers


def requeue_interrupted(study: optuna.Study) -> None:
    """Queue every interrupted trial again (once), with the same parameters."""
    trials = study.get_trials(deepcopy=False)
    queued = retries_of(trials).retried_as
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get(INTERRUPTED_KEY) and t.number not in queued:
            study.enqueue_trial(t.params, user_attrs={RETRY_OF_KEY: t.number}, skip_if_exists=False)
