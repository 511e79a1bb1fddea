"""Confirmation: re-evaluate the front and every trial that could join it (``nas confirm``, ``nas.confirm``).

A pass (:class:`nas.store.confirmations.ConfirmPass`) picks its candidates once (:func:`candidates`:
the Pareto front, and every trial whose ``p_front`` under the measured uncertainty is at least
``confirm.p_min``; seeds are spent where membership is uncertain, not on every trial), then

1. trains each candidate with the extra seeds that bring it to ``confirm.seeds`` in all
   (:func:`evaluators.confirmation.extra_seeds`), each through the search's own ``evaluate``
   (:func:`evaluators.confirmation.seed_settings`), storing each seed's result when it finishes;
2. times every candidate against the others, one paired pass per timed profile
   (:func:`evaluators.confirmation.paired_costs`), storing each pass when it finishes;
3. writes each candidate's confirmed metrics (the quality metrics' means over all its seeds with
   their ``_std`` and ``_n``, the paired medians, intervals and ratios, ``confirm_pass``) and marks
   the pass done.

Like a search it is resumable and crash-safe: every result is written when it is known (a kill loses
at most the training or timing in progress), a rerun skips what is stored, and a stop signal
(Ctrl-C, SIGTERM, SIGHUP) ends it after the write in progress with the command that goes on.
A rerun after a finished pass confirms the trials that have become candidates since (a longer
search) and times the whole set again; ``new_pass`` starts an independent pass (new seeds, a new
timing) whose values replace the last one's.
"""

from __future__ import annotations

import shlex
import signal
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import optuna
from optuna.trial import TrialState

from nas.engine import interrupts
from nas.engine.config import SearchConfig
from nas.store.confirmations import Confirmations, ConfirmPass
from nas.store.trial_attrs import ARCH_ID_KEY, ARCH_KEY, ERROR_KEY, REUSED_FROM_KEY, metrics_of

__all__ = ["ConfirmReport", "ConfirmStopped", "candidates", "confirm_study"]


@dataclass
class ConfirmReport:
    """What a confirmation did: its pass, the candidates (trial numbers), and in this run the
    trainings, the paired timing passes, the seeds that failed and the wall time."""

    study: str
    pass_number: int
    candidates: list = field(default_factory=list)
    trainings: int = 0
    timings: int = 0
    failed: int = 0
    seconds: float = 0.0
    already: bool = False  # the pass was done before this run: nothing to do

    def line(self) -> str:
        """The final line of ``nas confirm``."""
        if self.already:
            return (f"study {self.study}: pass {self.pass_number} already confirmed {len(self.candidates)} candidates; "
                    f"nothing to do (--new-pass confirms them again, independently)")
        failed = f", {self.failed} failed" if self.failed else ""
        return (f"study {self.study}: confirmed {len(self.candidates)} candidates (pass {self.pass_number}): "
                f"{self.trainings} trainings{failed}, {self.timings} paired timings, wall {_clock(self.seconds)}")


class ConfirmStopped(KeyboardInterrupt):
    """A stop signal ended a confirmation; what it measured is stored, and the message says how
    to go on. ``signum`` as :class:`nas.api.SearchStopped`'s."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = int(signum)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}"


def candidates(df, p_min: float, p_front: Optional[Callable] = None) -> list[int]:
    """The trial numbers a pass confirms: the Pareto front of ``df`` (``nas.load_trials``) and every
    COMPLETE feasible trial with ``p_front(df) >= p_min`` (default ``nas.results.uncertainty.p_front``:
    the probability that it is on the front under its measured uncertainty), each architecture once
    (a trial that reused a twin's outcome is confirmed through its twin)."""
    import pandas as pd

    from nas.results.trials import feasible_complete, pareto_front

    if p_front is None:
        from nas.results.uncertainty import p_front
    done = feasible_complete(df, list(df.attrs["objectives"]))
    if done.empty:
        return []
    likely = p_front(df).reindex(done.index).fillna(0.0) >= p_min
    chosen = set(pareto_front(df)["number"]) | set(done.loc[likely, "number"])
    twin_of = dict(zip(done["number"], done["reused_from"])) if "reused_from" in done.columns else {}
    return sorted({int(n) if pd.isna(twin_of.get(n)) else int(twin_of[n]) for n in chosen})


def confirm_study(study: optuna.Study, config: SearchConfig, *, seeds: Optional[int] = None,
                  rounds: Optional[int] = None, new_pass: bool = False, trust_code: bool = False,
                  progress: Optional[Callable] = None, log=print) -> ConfirmReport:
    """Run (or go on with) a confirmation pass of ``study``; see the module docstring. ``seeds`` and
    ``rounds`` override the space's ``confirm:`` section; given for the latest pass, more seeds
    train the candidates further and other rounds time them again (fewer seeds keep what it has). ``progress``: ``f(steps)`` giving a :class:`nas.engine.progress.Progress`. A stop signal
    raises :class:`ConfirmStopped` once the result in progress is stored."""
    t0 = time.monotonic()
    checked = config.checked_space(trust_code=trust_code)
    settings = checked.settings_for(config.seed)
    asked = {k: v for k, v in (("seeds", seeds), ("rounds", rounds)) if v is not None}
    store = Confirmations(study)
    try:
        p, report = _open_pass(store, config, replace(checked.confirm, **asked), asked, new_pass, log)
        if not report.already:
            _run_pass(study, store, p, checked, settings, report, progress, log)
    except KeyboardInterrupt as e:
        raise _stopped(e, config) from None
    report.seconds = time.monotonic() - t0
    return report


def _open_pass(store: Confirmations, config: SearchConfig, cfg, asked: dict, new_pass: bool, log):
    """The pass to run: a new one (the first, or ``new_pass``), else the latest with the trials
    that have become candidates since added, more seeds or other rounds when ``asked``, or, done
    and with nothing of that, the latest as it is (nothing to do)."""
    from nas.results.trials import load_trials
    from nas.store.optuna_access import storage_of

    current = store.current()
    wanted = candidates(load_trials(storage_of(store.study), config.study), cfg.p_min)
    if current is None or new_pass:
        p = ConfirmPass(1 if current is None else current.number + 1, wanted, cfg.seeds, cfg.rounds)
    else:
        added = sorted(set(wanted) - set(current.candidates))
        p = replace(current, candidates=sorted(set(current.candidates) | set(wanted)),
                    seeds=max(current.seeds, asked.get("seeds", 0)), rounds=asked.get("rounds", current.rounds))
        if current.done and p == current:
            return p, ConfirmReport(config.study, p.number, list(p.candidates), already=True)
        if added:
            log(f"pass {p.number}: {len(added)} more candidates since it started: {', '.join(f'#{n}' for n in added)}")
        p = replace(p, done=False)
    with interrupts.deferred():
        store.save_pass(p)
    return p, ConfirmReport(config.study, p.number, list(p.candidates))


def _stopped(e: KeyboardInterrupt, config: SearchConfig) -> ConfirmStopped:
    n = interrupts.signal_number(e)
    how = "interrupted" if n == signal.SIGINT else f"terminated by {interrupts.describe(e)}"
    cmd = f"nas confirm --study {shlex.quote(config.study)} --storage {shlex.quote(config.storage)}"
    return ConfirmStopped(n, f"{how}: the confirmation of study {config.study} kept every result it finished. "
                             f"Go on with:\n  {cmd}")


def _run_pass(study: optuna.Study, store: Confirmations, p: ConfirmPass, checked, settings, report: ConfirmReport,
              progress, log) -> None:
    """Train what pass ``p`` lacks, time what it lacks, then write every candidate's confirmed metrics."""
    from evaluators.confirmation import is_quality, timed_profiles
    from search_spaces.deploy_profiles import metric_name

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    attrs = store.attrs()
    work = [(n, s) for n in p.candidates for s in _seeds_of(p, metrics_of(trials[n]), settings.seed)
            if Confirmations.run_key(p, n, s) not in attrs]
    timed = [(prof, m) for prof, m in timed_profiles(settings, checked.space.io)
             if p.candidates and Confirmations.timing_of(attrs, p, metric_name(m, prof.name)) is None]
    log(f"confirmation pass {p.number} of study {report.study}: {len(p.candidates)} candidates "
        f"({', '.join(f'#{n}' for n in p.candidates) or 'none'}), {p.seeds} seeds each; "
        f"{len(work)} trainings and {len(timed)} paired timings to run")
    quality = [m for m in checked.space.objectives if is_quality(m)]
    with (progress or _log_progress)(len(work) + len(timed)) as bar:
        _train(work, trials, store, p, settings, report, bar, quality)
        _time(timed, trials, store, p, checked.space.io, settings, report, bar, len(work))
    timed_names = [metric_name(m, prof.name) for prof, m in timed_profiles(settings, checked.space.io)]
    _write_confirmed(store, p, trials, settings.seed, timed_names)


def _log_progress(total: int):
    import logging

    from nas.engine.progress import LogProgress

    return LogProgress(total, logging.getLogger("nas"))


def _seeds_of(p: ConfirmPass, first: dict, seed: int) -> list[int]:
    """The extra seeds of a candidate whose stored metrics are ``first``: in the first pass, those
    that bring it from the seeds its values already average (``<m>_n``, 1 without) to ``p.seeds``."""
    from evaluators.confirmation import extra_seeds, is_quality

    counts = [int(v) for k, v in first.items() if k.endswith("_n") and is_quality(k[:-2]) and v]
    return extra_seeds(seed, have=max(counts, default=1), want=p.seeds, pass_number=p.number)


def _train(work, trials: dict, store: Confirmations, p: ConfirmPass, settings, report: ConfirmReport, bar,
           names: list) -> None:
    """Train each ``(trial number, seed)`` of ``work``, storing each result when it is known."""
    from evaluators.confirmation import seed_settings
    from search_spaces import ArchSpec

    for i, (n, seed) in enumerate(work):
        what = f"trial #{n} seed {seed}"
        bar.step_start(i, what)
        result = _evaluate_seed(ArchSpec.from_json(trials[n].user_attrs[ARCH_KEY]), seed_settings(settings, seed))
        with interrupts.deferred():  # a stop signal waits until the result is stored
            store.save_run(p, n, seed, result)
        report.trainings += 1
        report.failed += ERROR_KEY in result
        first = metrics_of(trials[n])
        detail = result.get(ERROR_KEY) or ", ".join(f"{m}={result[m]:.4g} (first {first.get(m, float('nan')):.4g})"
                                                   for m in names if m in result)
        bar.step_end(i + 1, what, detail or "done")


def _evaluate_seed(arch, settings) -> dict:
    """The quality metrics of one extra seed (and its wall time), or ``{"error": reason}``: a
    failure of one seed is stored as its result, as a search stores a failed trial."""
    from evaluators.confirmation import is_quality
    from evaluators.errors import TrialFailure
    from evaluators.evaluation import evaluate
    from search_spaces.failures import failure_reason

    try:
        metrics = evaluate(arch, settings)
    except TrialFailure as e:
        return {ERROR_KEY: str(e)}
    except Exception as e:  # building or training crashed: the seed's outcome, not the confirmation's
        return {ERROR_KEY: failure_reason(e)}
    return {k: float(v) for k, v in metrics.items() if (is_quality(k) or k == "eval_seconds")
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _time(timed, trials: dict, store: Confirmations, p: ConfirmPass, io, settings, report: ConfirmReport, bar,
          done: int) -> None:
    """One paired timing of every candidate per ``(profile, metric)`` of ``timed``, each stored when done."""
    from evaluators.confirmation import paired_costs
    from nas.errors import UserError
    from search_spaces import ArchSpec
    from search_spaces.deploy_profiles import metric_name
    from search_spaces.failures import failure_reason

    archs = {str(n): ArchSpec.from_json(trials[n].user_attrs[ARCH_KEY]) for n in p.candidates}
    for i, (profile, metric) in enumerate(timed, start=done):
        name = metric_name(metric, profile.name)
        what = f"paired timing of {name}, {len(archs)} candidates x {p.rounds} rounds"
        bar.step_start(i, what)
        try:
            values = paired_costs(archs, io, profile, metric, settings, rounds=p.rounds)
        except Exception as e:  # e.g. every candidate's model at once does not fit the device
            raise UserError(f"study {report.study}: {what}: {failure_reason(e)}") from None
        with interrupts.deferred():
            store.save_timing(p, name, {int(k): v for k, v in values.items()})
        report.timings += 1
        ratio = name.replace("_ms", "_ratio")
        slowest = max(values, key=lambda k: values[k][ratio])
        bar.step_end(i + 1, what, f"slowest #{slowest} at {values[slowest][ratio]:.2f}x the fastest")


def _write_confirmed(store: Confirmations, p: ConfirmPass, trials: dict, seed: int, timed: list) -> None:
    """Each candidate's confirmed metrics (and its twins', the trials that reused its outcome), from
    its stored seeds and the paired timings of ``timed`` (metric names); then the pass is done."""
    from evaluators.confirmation import combine

    attrs = store.attrs()
    timings = [Confirmations.timing_of(attrs, p, name) or {} for name in timed]
    for n in p.candidates:
        first = metrics_of(trials[n])
        runs = [attrs.get(Confirmations.run_key(p, n, s)) for s in _seeds_of(p, first, seed)]
        ok = [r for r in runs if r is not None and ERROR_KEY not in r]
        confirmed = combine(ok, first if p.number == 1 else None)
        for values in timings:
            confirmed.update(values.get(n, {}))
        confirmed["confirm_pass"] = p.number
        if len(ok) < len(runs):
            confirmed["confirm_failed_seeds"] = len(runs) - len(ok)
        for number in [n, *_twins(trials, n)]:
            with interrupts.deferred():
                store.save_confirmed(number, confirmed)
    with interrupts.deferred():
        store.save_pass(replace(p, done=True))


def _twins(trials: dict, n: int) -> list[int]:
    """The COMPLETE trials that reused trial ``n``'s outcome (the same architecture)."""
    arch_id = trials[n].user_attrs.get(ARCH_ID_KEY)
    return [t.number for t in trials.values() if t.number != n and t.state == TrialState.COMPLETE
            and t.user_attrs.get(REUSED_FROM_KEY) == n and t.user_attrs.get(ARCH_ID_KEY) == arch_id]
