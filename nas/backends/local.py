"""The local backend: one process asks, evaluates and tells, until the study has its budget."""

from __future__ import annotations

import time
from typing import Optional

import optuna
from optuna.trial import TrialState

from nas.backends import register_backend
from nas.config import SearchConfig
from nas.objective import Objective, TrialError
from nas.progress import Progress
from nas.study import budget_count, reap_stale_trials

__all__ = ["run", "run_local", "front_size"]


def front_size(study: optuna.Study) -> int:
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    trials = [t for t in trials if all(v <= 0 for v in t.constraints.values())]  # feasible, as nas.pareto_front
    if not trials:
        return 0
    from nas.results import pareto_mask
    import numpy as np

    values = np.array([t.values for t in trials], dtype=float)
    directions = [d.name.lower() for d in study.directions]
    return int(pareto_mask(values, directions).sum())


def _detail(t: optuna.trial.FrozenTrial, names: list[str]) -> str:
    if t.state == TrialState.COMPLETE:
        vals = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, t.values))
        reused = t.user_attrs.get("reused_from")
        return vals + (f" (reused trial {reused})" if reused is not None else "")
    return str(t.user_attrs.get("error") or t.user_attrs.get("pruned_reason") or t.state.name)


@register_backend("local")
def run_local(study: optuna.Study, config: SearchConfig, *, progress: Optional[Progress] = None,
              log=print) -> int:
    """Run trials until ``budget_count(study) >= config.trials`` (or ``config.timeout`` seconds).
    Returns the number of trials this call ran. KeyboardInterrupt propagates after the
    interrupted trial is recorded (FAIL, ``interrupted``) and queued again."""
    reap_stale_trials(study, config, log=log)
    space = config.load_space()
    names = list(space.objectives)
    state = {"number": None}

    def on_candidate(number, arch):
        state["number"] = number
        if progress is not None:
            progress.start(budget_count(study), front_size(study), number, arch.summary())

    objective = Objective(space, config.eval_settings(), on_candidate=on_candidate)
    ran = 0
    t0 = time.monotonic()
    while budget_count(study) < config.trials:
        if config.timeout is not None and time.monotonic() - t0 >= config.timeout:
            log(f"timeout of {config.timeout:g}s reached")
            break
        try:
            study.optimize(objective, n_trials=1, catch=(TrialError,), gc_after_trial=False)
        except KeyboardInterrupt:
            _requeue_interrupted(study)
            raise
        ran += 1
        if progress is not None and state["number"] is not None:
            t = study.get_trials(deepcopy=False)[state["number"]]
            progress.end(budget_count(study), front_size(study), t.number, t.state.name, _detail(t, names))
    return ran


def _requeue_interrupted(study: optuna.Study) -> None:
    """Queue every interrupted trial again (once), with the same parameters."""
    trials = study.get_trials(deepcopy=False)
    queued = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get("interrupted") and t.number not in queued:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)


run = run_local  # every backend module exposes run(study, config, *, progress, log)
