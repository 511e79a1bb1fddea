"""The local backend: one process asks, evaluates and tells, until the study has its budget."""

from __future__ import annotations

import time
from typing import Optional

import optuna
from optuna.trial import TrialState

from nas.engine import interrupts
from nas.engine.backends import register_backend
from nas.engine.budget import abandon, ask_within_budget, report_running
from nas.engine.config import SearchConfig
from nas.engine.objective import Objective, TrialError
from nas.engine.progress import Progress, trial_outcome
from nas.results.trials import front_size
from nas.store.heartbeats import Heartbeat
from nas.store.optuna_access import fresh_trial
from nas.store.study import budget_count
from nas.store.trial_attrs import ERROR_KEY
from search_spaces.failures import failure_reason

__all__ = ["run", "run_local"]


@register_backend("local")
def run_local(study: optuna.Study, config: SearchConfig, *, progress: Optional[Progress] = None,
              log=print) -> int:
    """Run trials until the study has ``config.trials`` finished trials (or ``config.timeout``
    seconds), starting each only while finished + running trials are below the budget, so several
    processes on one study stop at it exactly (nas/engine/budget.py); while the trials left to reach it
    run in another live process, wait for them. Returns the number of trials this call ran.
    KeyboardInterrupt (Ctrl-C, or SIGTERM / SIGHUP as ``nas.engine.interrupts.Interrupted``) propagates
    after the interrupted trial is recorded (FAIL, ``interrupted``) and queued again."""
    report_running(study, config, log=log)
    space = config.load_space()
    names = list(space.objectives)
    state = {"done": 0}

    def on_candidate(number, arch):
        if progress is not None:
            progress.start(state["done"], front_size(study), number, arch.summary())

    objective = Objective(space, config.eval_settings(), on_candidate=on_candidate)
    ran = 0
    waiting_for: set[int] = set()
    t0 = time.monotonic()
    while config.timeout is None or time.monotonic() - t0 < config.timeout:
        slot = ask_within_budget(study, config, log=log)
        state["done"] = slot.finished
        if slot.trial is None:
            if slot.finished >= config.trials:
                return ran
            if set(slot.running) != waiting_for:
                waiting_for = set(slot.running)
                log(f"{slot.finished}/{config.trials} trials finished and the rest are RUNNING elsewhere "
                    f"({', '.join(f'#{n}' for n in sorted(waiting_for))}); waiting for them")
            time.sleep(min(1.0, config.heartbeat_interval))
            continue
        _evaluate(study, objective, slot.trial, config.heartbeat_interval)
        ran += 1
        if progress is not None:
            t = fresh_trial(study, slot.trial)
            progress.end(budget_count(study), front_size(study), t.number, t.state.name, trial_outcome(t, names))
    log(f"timeout of {config.timeout:g}s reached")
    return ran


def _evaluate(study: optuna.Study, objective: Objective, trial: optuna.Trial, heartbeat: float) -> None:
    """Evaluate ``trial`` (heartbeat on) and tell the study its state: COMPLETE, PRUNED (ladder) or
    FAIL (the reason stored). An interrupt is recorded and re-raised, as is an unexpected error."""
    with Heartbeat(study, trial, heartbeat):
        try:
            values = objective(trial)
        except optuna.TrialPruned:
            return _tell(study, trial, state=TrialState.PRUNED)
        except TrialError:
            return _tell(study, trial, state=TrialState.FAIL)
        except KeyboardInterrupt as e:
            abandon(study, [trial], e)
            raise
        except BaseException as e:
            if not trial.user_attrs.get(ERROR_KEY):
                trial.set_user_attr(ERROR_KEY, failure_reason(e))
            study.tell(trial, state=TrialState.FAIL)
            raise
    _tell(study, trial, values)


def _tell(study: optuna.Study, trial: optuna.Trial, values=None, state=None) -> None:
    with interrupts.deferred():  # a stop signal waits until the result is stored
        study.tell(trial, values, state=state)


run = run_local  # every backend module exposes run(study, config, *, progress, log)
