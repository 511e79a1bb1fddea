"""The objective: one Optuna trial -> sample an ArchSpec, evaluate it (or reuse a twin), record.

Shared by every backend. What is stored on the trial (user attrs, all JSON primitives) is listed
in :mod:`nas.store.trial_attrs`.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import optuna
from optuna.trial import TrialState

import search_spaces
from evaluators.errors import TrialFailure
from evaluators.evaluation import EvalSettings, evaluate
from evaluators.ladder import LadderPruned
from evaluators.predictor import Predictor
from nas.engine import interrupts
from nas.store.latency_tables import SQLLatencyTable
from nas.store.optuna_access import engine, set_user_attrs
from nas.store.trial_attrs import (
    ARCH_ID_KEY,
    ARCH_KEY,
    CONSTRAINTS_KEY,
    ERROR_KEY,
    FIXED_ARCH_KEY,
    INTERRUPTED_KEY,
    LADDER_PASSED_KEY,
    LADDER_STOPPED_KEY,
    LADDER_VALUES_KEY,
    METRICS_KEY,
    PRUNED_REASON_KEY,
    REUSED_FROM_KEY,
    SUMMARY_KEY,
    WORKER_DIED_KEY,
    metric_attr,
    metrics_of,
    stale_outcome,
)
from nas.store.trial_rows import trials_with_attr
from search_spaces.failures import trial_failure_reason

__all__ = ["Objective", "TrialError"]


class TrialError(Exception):
    """Raised out of the objective so Optuna records the trial as FAIL; the reason is stored."""


class Objective:
    def __init__(self, space, settings: EvalSettings, on_candidate: Optional[Callable] = None):
        self.space = space
        self.settings = settings
        self.objectives = list(space.objectives)
        self.constraints = dict(space.constraints)
        self.on_candidate = on_candidate
        self._predictor = None

    def predictor(self, study: optuna.Study) -> Predictor:
        """Latency predictions over the block latency table in ``study``'s storage (made on first
        use; ``nas.store.latency_tables``), timing missing parts with the space's latency settings."""
        if self._predictor is None:
            self._predictor = Predictor(SQLLatencyTable(engine(study)), self.settings.latency, seed=self.settings.seed)
        return self._predictor

    @staticmethod
    def twin(study: optuna.Study, arch_id: str, number: int):
        """The finished trial (other than ``number``) of architecture ``arch_id`` whose outcome a
        repeat reuses: a COMPLETE one with metrics, or one that failed for the architecture's own
        reason (not a stop signal, not a dead worker); None if there is none."""
        for t in trials_with_attr(study, ARCH_ID_KEY, arch_id):  # found by the database, not by reading the study
            if t.number == number or t.state not in (TrialState.COMPLETE, TrialState.FAIL):
                continue
            if t.state == TrialState.COMPLETE and METRICS_KEY in t.user_attrs:
                return t
            # a failure of the architecture is its outcome; a stopped run or a dead worker is not
            if (t.state == TrialState.FAIL and t.user_attrs.get(ERROR_KEY) and not t.user_attrs.get(INTERRUPTED_KEY)
                    and not t.user_attrs.get(WORKER_DIED_KEY)):
                return t
        return None

    def _ladder_history(self, study: optuna.Study) -> dict[str, list[float]]:
        """Scores earlier candidates reached at each ladder rung (finished or stopped)."""
        if not self.settings.ladder:
            return {}
        history: dict[str, list[float]] = {}
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            values = t.user_attrs.get(LADDER_VALUES_KEY) or metrics_of(t).get("ladder_values") or {}
            if t.user_attrs.get(REUSED_FROM_KEY) is not None:
                continue  # a repeat carries its twin's scores: count them once
            for rung, v in values.items():
                history.setdefault(rung, []).append(float(v))
        return history

    def _constraint_values(self, metrics: dict) -> dict[str, float]:
        """Optuna constraint values (<= 0 means satisfied), e.g. ``params<=2e6: params - 2e6``."""
        out = {}
        for name, bounds in self.constraints.items():
            v = float(metrics[name])
            if "max" in bounds:
                out[f"{name}<={bounds['max']:g}"] = v - float(bounds["max"])
            if "min" in bounds:
                out[f"{name}>={bounds['min']:g}"] = float(bounds["min"]) - v
        return out

    def __call__(self, trial: optuna.Trial):
        try:
            return self._run(trial)
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM / SIGHUP (nas.engine.interrupts)
            trial.set_user_attr(INTERRUPTED_KEY, True)
            trial.set_user_attr(ERROR_KEY, f"interrupted by {interrupts.describe(e)}; queued again for the next run")
            raise

    def prepare(self, trial: optuna.Trial):
        """Sample (or take the enqueued ``fixed_arch``) and record the candidate on ``trial``.
        Returns ``(arch, twin)``: ``twin`` is an earlier finished trial of the same architecture, or
        None. Raises :class:`TrialError` (reason stored) for an invalid fixed architecture."""
        # a retried trial inherits the user attrs of the one it replaces: start clean
        stale = stale_outcome(trial.user_attrs)
        if stale:
            set_user_attrs(trial, stale)
        try:
            fixed = trial.user_attrs.get(FIXED_ARCH_KEY)
            if fixed:  # an enqueued design (e.g. a literature baseline), evaluated as given
                arch = search_spaces.ArchSpec.from_json(fixed).validate()
                search_spaces.builder.check_compatible(arch, self.space.io)
            else:
                arch = search_spaces.sample(self.space, trial)
        except search_spaces.ArchValidationError as e:  # sampling filters choices; a fixed arch may be bad
            trial.set_user_attr(ERROR_KEY, f"invalid architecture: {e}")
            raise TrialError(f"invalid architecture: {e}") from None
        trial.set_user_attr(ARCH_ID_KEY, arch.arch_id)
        trial.set_user_attr(ARCH_KEY, arch.to_json())
        trial.set_user_attr(SUMMARY_KEY, arch.summary())
        return arch, self.twin(trial.study, arch.arch_id, trial.number)

    def reuse(self, trial: optuna.Trial, twin) -> dict:
        """Metrics of ``twin`` for ``trial`` (``reused_from`` recorded); TrialError if it failed."""
        trial.set_user_attr(REUSED_FROM_KEY, twin.number)
        if twin.state == TrialState.FAIL:
            reason = f"same architecture as trial {twin.number}, which failed: {twin.user_attrs[ERROR_KEY]}"
            trial.set_user_attr(ERROR_KEY, reason)
            raise TrialError(reason)
        return dict(twin.user_attrs[METRICS_KEY])

    def record(self, trial: optuna.Trial, metrics: dict) -> list[float]:
        """Store ``metrics`` and constraint values on ``trial``; return the objective values.
        TrialError (reason stored) if an objective is missing or not finite."""
        values = []
        for name in self.objectives:
            v = metrics.get(name)
            if v is None or not math.isfinite(float(v)):
                reason = f"objective {name} is {v!r}"
                trial.set_user_attr(ERROR_KEY, reason)
                raise TrialError(reason)
            values.append(float(v))
        stored = {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                  for k, v in metrics.items()}
        # the dict (read back) and each metric on its own (the dashboard's columns), in one write
        set_user_attrs(trial, {METRICS_KEY: stored, **{metric_attr(k): v for k, v in stored.items()}})
        constraints = self._constraint_values(metrics)
        for key, value in constraints.items():
            trial.set_constraint(key, value)  # read by NSGA-II / TPE / GP samplers
        trial.set_user_attr(CONSTRAINTS_KEY, constraints)
        return values

    def _run(self, trial: optuna.Trial):
        arch, twin = self.prepare(trial)
        if self.on_candidate is not None:
            self.on_candidate(trial.number, arch)
        if twin is not None:
            metrics = self.reuse(trial, twin)
        else:
            try:
                metrics = evaluate(arch, self.settings, ladder_history=self._ladder_history(trial.study),
                                   predictor=self.predictor(trial.study))
            except LadderPruned as e:
                trial.set_user_attr(LADDER_VALUES_KEY, e.values)
                trial.set_user_attr(LADDER_PASSED_KEY, e.passed)
                trial.set_user_attr(LADDER_STOPPED_KEY, e.rung)
                trial.set_user_attr(PRUNED_REASON_KEY, str(e))
                raise optuna.TrialPruned(str(e)) from None
            except TrialFailure as e:
                trial.set_user_attr(ERROR_KEY, str(e))
                raise TrialError(str(e)) from None
            except (Exception, SystemExit) as e:  # building, training or timing crashed, or user code
                reason = trial_failure_reason(e)  # (a mixer, a metric) called sys.exit: record and go on
                trial.set_user_attr(ERROR_KEY, reason)
                raise TrialError(reason) from None
        return self.record(trial, metrics)
