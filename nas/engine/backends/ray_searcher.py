"""The driver side of the Ray backend: a Ray Tune ``Searcher`` that is a window on the Optuna study.

The study stays the single system of record, and only the driver writes to it:

- ``suggest``: ``study.ask()``, sample the ArchSpec (or take a retried trial's parameters), store
  ``arch_id`` / ``arch`` / ``summary``; a twin of a finished architecture is told at once (reused
  metrics, as in the local backend); a twin of one in flight waits for its result (parked), so no
  architecture trains twice at the same time; otherwise the arch JSON goes to a Ray Tune trial;
- ``on_trial_complete``: COMPLETE with the objective values and the same user attrs as the local
  backend; PRUNED (``pruned_at_step``) when the scheduler stopped it; FAIL with ``error``;
- a worker that died (``on_trial_error`` of :class:`WorkerFailureCallback`): FAIL with the reason and
  one retry with the same parameters (``max_retry`` of the config), which counts for the budget instead.

Heartbeats of the trials in flight are recorded by a driver thread, so when the driver dies its
trials go stale and ``nas resume`` re-runs them.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import warnings
from typing import Optional

import optuna
from optuna.trial import TrialState
from ray.tune import Callback
from ray.tune.search import Searcher

from nas.engine import interrupts
from nas.engine.budget import abandon, ask_within_budget
from nas.engine.config import SearchConfig
from nas.engine.objective import Objective, TrialError
from nas.engine.progress import trial_outcome
from nas.results.trials import front_size
from nas.store.optuna_access import fresh_trial, storage_of, trial_id_of
from nas.store.study import budget_count
from nas.store.trial_attrs import (
    DRIVER_KEY,
    ERROR_KEY,
    FAILED_TRIAL_KEY,
    METRICS_KEY,
    PRUNED_AT_STEP_KEY,
    PRUNED_LOSS_KEY,
    RETRY_HISTORY_KEY,
    RETRY_OF_KEY,
    WORKER_DIED_KEY,
    WORKER_KEY,
    retry_history,
)
from search_spaces import ArchSpec

__all__ = ["METRIC", "MODE", "StudySearcher", "WorkerFailureCallback"]

warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

METRIC, MODE = "loss", "min"  # what the scheduler compares at each rung (see docs/ray.md)


class StudySearcher(Searcher):
    def __init__(self, study: optuna.Study, config: SearchConfig, trainable_cfg: dict, *, progress=None,
                 log=print):
        super().__init__(metric=METRIC, mode=MODE)
        self.study = study
        self.config = config
        self.space = config.load_space()
        self.objective = Objective(self.space, config.eval_settings())  # for twin / _constraint_values
        self.names = list(self.space.objectives)
        self.trainable_cfg = trainable_cfg
        self.progress = progress
        self.log = log
        self.live: dict[str, optuna.Trial] = {}  # Ray Tune trial id -> Optuna trial in flight
        self._live_arch: dict[int, str] = {}  # trial number in flight -> its arch_id
        # twins of a trial in flight, by its number: they reuse its result when it has one, else run
        self._parked: dict[int, list[tuple[optuna.Trial, ArchSpec]]] = {}
        self._ready: list[tuple[optuna.Trial, ArchSpec]] = []  # released twins with no result to reuse
        self.ran = 0
        self._driver = {"host": socket.gethostname(), "pid": os.getpid()}
        self._done = budget_count(study)
        self._t0 = time.monotonic()
        self._full = False  # no trial is left to start: every one is finished or owed by this driver
        # the last ask found no room because trials of another live process fill the budget
        self._elsewhere = False
        self._next_ask = 0.0
        self._lock = threading.Lock()  # live dict: the heartbeat thread reads it
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeats, name="nas-heartbeats", daemon=True)
        self._beat.start()

    # Tune pickles its searcher for experiment checkpoints; the study is the checkpoint here.
    def __getstate__(self):
        return {"_metric": self._metric, "_mode": self._mode}

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        pass

    # ----------------------------------------------------------------------- heartbeats
    def _heartbeats(self) -> None:
        storage = storage_of(self.study)
        while not self._stop.wait(self.config.heartbeat_interval):
            with self._lock:
                ids = [trial_id_of(t) for t in self._waiting()]
            for tid in ids:
                try:
                    storage.record_heartbeat(tid)
                except Exception:  # a trial finished meanwhile, or a transient DB error: next beat
                    pass

    def close(self) -> None:
        self._stop.set()
        self._beat.join(timeout=5)

    # ----------------------------------------------------------------------- asking
    def _waiting(self) -> list[optuna.Trial]:
        """Trials this driver owes a result: in flight, parked and released twins."""
        parked = [t for twins in self._parked.values() for t, _ in twins]
        return [*self.live.values(), *parked, *(t for t, _ in self._ready)]

    def _ask(self) -> Optional[optuna.Trial]:
        """A new trial if the budget has room for it (finished + RUNNING trials of every process
        below it, nas/engine/budget.py); None otherwise, and ``self._full`` when nothing is left to start."""
        if self.config.timeout is not None and time.monotonic() - self._t0 >= self.config.timeout:
            self._full = True
        if self._full or time.monotonic() < self._next_ask:
            return None
        slot = ask_within_budget(self.study, self.config, log=self.log)
        self._done = slot.finished
        self._elsewhere = slot.trial is None and bool(slot.running)
        if slot.trial is None:
            self._full = slot.finished >= self.config.trials
            self._next_ask = time.monotonic() + 1.0  # RUNNING elsewhere: look again in a second
        return slot.trial

    def suggest(self, trial_id: str):
        # a stop signal waits until the trial started here is owed (live, parked or told), so
        # abandon_live records and queues it again; else it would stay RUNNING until its heartbeat aged
        with interrupts.deferred():
            return self._suggest(trial_id)

    def _suggest(self, trial_id: str):
        while True:
            if self._ready:
                with self._lock:
                    trial, arch = self._ready.pop(0)
            else:
                trial = self._ask()
                if trial is None:
                    break
                arch = self._prepare(trial)
                if arch is None:  # told already (twin, invalid fixed architecture) or parked
                    continue
            with self._lock:
                self.live[trial_id] = trial
                self._live_arch[trial.number] = arch.arch_id
            if self.progress is not None:
                self.progress.start(self._done, front_size(self.study), trial.number, arch.summary())
            return {**self.trainable_cfg, "arch": arch.to_json(), "number": trial.number}
        # parked twins wait for a trial in flight, so an empty ``live`` means nothing is owed. When the
        # rest of the budget is RUNNING in another live process, this driver stops instead of waiting:
        # Tune keeps its idle actors (reuse_actors), which would hold the CPUs the other driver's
        # trials wait for on a shared cluster (a deadlock until Tune evicts them). A trial the other
        # process leaves behind is failed and retried by the next `nas resume`.
        if not self.live and not self._full and self._elsewhere:
            self.log("the rest of the budget is running in another process; this driver stops")
            self._full = True
        return Searcher.FINISHED if self._full and not self.live else None

    def _prepare(self, trial: optuna.Trial):
        """Sample and record the candidate; returns the ArchSpec, or None when the trial was told
        here or parked behind a trial in flight with the same architecture."""
        try:
            arch, twin = self.objective.prepare(trial)
        except TrialError as e:
            self._fail(trial, str(e))
            return None
        trial.set_user_attr(DRIVER_KEY, self._driver)
        retried = retry_history(fresh_trial(self.study, trial))
        if twin is not None and twin.number in retried:  # the run this trial retries is no twin
            twin = None
        if twin is None:
            running = [n for n, a in self._live_arch.items() if a == arch.arch_id]
            if not running:
                return arch
            with self._lock:
                self._parked.setdefault(running[0], []).append((trial, arch))
            return None
        try:
            self._complete(trial, self.objective.reuse(trial, twin))
        except TrialError as e:
            self._fail(trial, str(e))
        return None

    # ----------------------------------------------------------------------- telling
    def _finished(self, trial: optuna.Trial, reusable: bool = True) -> None:
        self._done = budget_count(self.study)
        self.ran += 1
        t = fresh_trial(self.study, trial)
        if self.progress is not None:
            detail = (f"stopped by the scheduler at step {t.user_attrs.get(PRUNED_AT_STEP_KEY)}"
                      if t.state == TrialState.PRUNED else trial_outcome(t, self.names))
            self.progress.end(self._done, front_size(self.study), t.number, t.state.name, detail)
        self._release(t, reusable)

    def _release(self, original: optuna.trial.FrozenTrial, reusable: bool) -> None:
        """``original`` finished: its parked twins reuse its metrics (or failure) as a twin found
        finished would; when it has none to reuse (stopped by the scheduler, worker died) they run."""
        with self._lock:
            twins = self._parked.pop(original.number, [])
        reuse = reusable and (original.state == TrialState.COMPLETE and METRICS_KEY in original.user_attrs
                              or original.state == TrialState.FAIL and original.user_attrs.get(ERROR_KEY))
        for trial, arch in twins:
            if not reuse:
                with self._lock:
                    self._ready.append((trial, arch))
                continue
            try:
                self._complete(trial, self.objective.reuse(trial, original))
            except TrialError as e:
                self._fail(trial, str(e))

    def _fail(self, trial: optuna.Trial, reason: str, reusable: bool = True) -> None:
        trial.set_user_attr(ERROR_KEY, reason)
        self.study.tell(trial, state=TrialState.FAIL)
        self._finished(trial, reusable)

    def _complete(self, trial: optuna.Trial, metrics: dict) -> None:
        try:
            values = self.objective.record(trial, metrics)
        except TrialError as e:
            return self._fail(trial, str(e))
        self.study.tell(trial, values)
        self._finished(trial)

    def _pop(self, trial_id: str) -> Optional[optuna.Trial]:
        with self._lock:
            trial = self.live.pop(trial_id, None)
            if trial is not None:
                self._live_arch.pop(trial.number, None)
            return trial

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        if error:
            return  # a worker crash: WorkerFailureCallback.on_trial_error tells it, with the reason
        trial = self._pop(trial_id)
        if trial is None:
            return
        result = result or {}
        if result.get("worker"):
            trial.set_user_attr(WORKER_KEY, json.loads(result["worker"]))
        if not result.get("final"):
            step = int(result.get("step") or 0)
            trial.set_user_attr(PRUNED_AT_STEP_KEY, step)
            trial.set_user_attr(PRUNED_LOSS_KEY, float(result.get(METRIC, float("nan"))))
            self.study.tell(trial, state=TrialState.PRUNED)
            self._finished(trial)
        elif result.get("error"):
            self._fail(trial, str(result["error"]))
        else:
            self._complete(trial, json.loads(result["metrics"]))

    def worker_died(self, trial_id: str, reason: str, step: int) -> None:
        trial = self._pop(trial_id)
        if trial is None:
            return
        trial.set_user_attr(WORKER_DIED_KEY, True)  # not the architecture's outcome: twins run themselves
        self._fail(trial, f"worker process died at step {step}: {reason}", reusable=False)
        frozen = fresh_trial(self.study, trial)
        history = [*retry_history(frozen), frozen.number]
        if len(history) > self.config.max_retry:
            self.log(f"trial #{frozen.number}: worker died, not retried again ({len(history) - 1} retries)")
            return
        kept = {k: v for k, v in frozen.user_attrs.items() if k not in (ERROR_KEY, WORKER_KEY, WORKER_DIED_KEY)}
        self.study.add_trial(optuna.create_trial(
            state=TrialState.WAITING, params=frozen.params, distributions=frozen.distributions,
            user_attrs={**kept, RETRY_OF_KEY: frozen.number},
            # as Optuna's RetryHeartbeatStaleTrialCallback records a retry, so retry_history() reads it
            system_attrs={**frozen.system_attrs, FAILED_TRIAL_KEY: frozen.number, RETRY_HISTORY_KEY: history},
        ))
        self._done = budget_count(self.study)
        self.log(f"trial #{frozen.number}: worker died; queued again with the same parameters")

    def abandon_live(self, exc: BaseException) -> list[int]:
        """The driver is stopping with trials in flight (``exc``: Ctrl-C, SIGTERM, ...): FAIL them as
        interrupted and queue each again, as the local backend does."""
        with self._lock:
            owed = self._waiting()
            self.live, self._live_arch, self._parked, self._ready = {}, {}, {}, []
        return abandon(self.study, owed, exc) if owed else []


class WorkerFailureCallback(Callback):
    """Turns a Ray Tune trial error (the worker process died: the trainable itself never raises)
    into a FAIL with the reason, and a retry."""

    def __init__(self, searcher: StudySearcher):
        self.searcher = searcher

    def on_trial_error(self, iteration, trials, trial, **info):
        reason = "Ray reported an error"
        try:
            text = open(trial.error_file).read() if trial.error_file else ""
            lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Failure #")]
            hits = [ln for ln in lines if "died" in ln.lower() or "Error" in ln]
            reason = (hits or lines or [reason])[0][:300]
        except OSError:
            pass
        step = int((trial.last_result or {}).get("step") or 0)
        self.searcher.worker_died(trial.trial_id, reason, step)
