"""The results' reads of a study in a few queries (nas/store/trial_rows.py) give what reading every
trial through Optuna gives, and their cost grows linearly with the study (not per trial per trial)."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

import nas
import nas.store.trial_attrs as trial_attrs
from nas.results.trials import front_size, pareto_mask
from nas.store.trial_rows import count_finished, feasible_values, finished_count, results_trials, trials_with_attr

DIST = {"x": CategoricalDistribution([0, 1])}


def _study(tmp_path, n: int) -> optuna.Study:
    """``n`` trials of every kind a search leaves: COMPLETE (one infinite value, some infeasible),
    PRUNED with intermediate values, FAIL with an error, FAIL interrupted, a dead worker's FAIL and
    the trial that retries it, RUNNING and WAITING."""
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path}/s{n}.db",
                                directions=["maximize", "minimize"])
    for i in range(n):
        attrs = {"arch_id": f"a{i % 7}", "metrics": {"accuracy": i / n}}
        kind = i % 8
        if kind == 1:
            t = create_trial(state=TrialState.PRUNED, params={"x": 0}, distributions=DIST, user_attrs=attrs,
                             intermediate_values={0: 0.5, 3: math.inf})
        elif kind == 2:
            t = create_trial(state=TrialState.FAIL, params={"x": 1}, distributions=DIST,
                             user_attrs={**attrs, "error": "OutOfMemoryError"})
        elif kind == 3:
            t = create_trial(state=TrialState.FAIL, params={"x": 1}, distributions=DIST,
                             user_attrs={**attrs, "interrupted": True, "error": "interrupted by Ctrl-C"})
        elif kind == 4:  # a dead worker's trial ...
            t = create_trial(state=TrialState.FAIL, params={"x": 1}, distributions=DIST, user_attrs=attrs)
        elif kind == 5:  # ... and the trial that runs it again (Optuna's retry bookkeeping)
            t = create_trial(state=TrialState.COMPLETE, values=[0.1, 1.0], params={"x": 1}, distributions=DIST,
                             user_attrs=attrs, system_attrs={"failed_trial": i - 1, "retry_history": [i - 1]})
        else:
            t = create_trial(state=TrialState.COMPLETE, values=[i / n, math.inf if i == 0 else float(i % 5)],
                             params={"x": i % 2}, distributions=DIST, user_attrs=attrs,
                             constraints={"params<=1": float(i % 3) - 1.0})
        study.add_trial(t)
    study.enqueue_trial({"x": 0})
    study.ask()  # RUNNING
    study.enqueue_trial({"x": 1})  # WAITING
    return study


def _view(t):
    return (t.number, t.state, t.values, t.user_attrs, t.system_attrs, t.datetime_start, t.datetime_complete,
            t.intermediate_values, t.constraints)


def test_results_trials_read_what_optuna_reads(tmp_path):
    study = _study(tmp_path, 24)
    assert [_view(t) for t in results_trials(study)] == [_view(t) for t in study.get_trials(deepcopy=False)]


def test_the_budget_count_duplicate_lookup_and_front_match_reading_every_trial(tmp_path):
    study = _study(tmp_path, 40)
    trials = study.get_trials(deepcopy=False)
    assert finished_count(study) == count_finished(trials) == 40 - 5 - 5  # interrupted and retried FAILs left out
    assert [t.number for t in trials_with_attr(study, "arch_id", "a3")] == [t.number for t in trials
                                                                           if t.user_attrs.get("arch_id") == "a3"]
    assert trials_with_attr(study, "arch_id", "nowhere") == []
    feasible = [t.values for t in trials if t.state == TrialState.COMPLETE and all(v <= 0 for v in t.constraints.values())]
    assert sorted(feasible_values(study)) == sorted(feasible)
    assert front_size(study) == int(pareto_mask(feasible, ["maximize", "minimize"]).sum())


@pytest.mark.parametrize("n", [40])
def test_loading_a_study_reads_each_trial_once(tmp_path, monkeypatch, n):
    """Each trial's retry bookkeeping is read once per load (it was read once per trial per trial),
    and Optuna's per-trial ORM read is not used: the count grows linearly with the study."""
    calls = {"retry_history": 0, "orm": 0}
    real = trial_attrs.retry_history

    def counting(trial):
        calls["retry_history"] += 1
        return real(trial)

    real_orm = optuna.storages.RDBStorage.get_all_trials

    def counting_orm(self, *args, **kwargs):
        calls["orm"] += 1
        return real_orm(self, *args, **kwargs)

    monkeypatch.setattr(trial_attrs, "retry_history", counting)
    monkeypatch.setattr(optuna.storages.RDBStorage, "get_all_trials", counting_orm)
    seen = []
    for size in (n, 2 * n):
        url = _study(tmp_path, size)._storage._backend.url
        calls.update(retry_history=0, orm=0)
        df = nas.load_trials(url, "s")
        assert len(df) == size + 2
        seen.append(dict(calls))
    assert seen[0]["orm"] == seen[1]["orm"] == 0
    assert seen[1]["retry_history"] == 2 * seen[0]["retry_history"] - 2  # one per trial (+2: RUNNING, WAITING)
