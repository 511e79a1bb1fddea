import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nas.results.trials import feasible_complete, front_size, load_trials, pareto_front, pareto_mask


def brute_force(values, directions):
    sign = np.array([1 if d == "maximize" else -1 for d in directions])
    v = values * sign  # maximize all
    keep = []
    for i in range(len(v)):
        dominated = any(np.all(v[j] >= v[i]) and np.any(v[j] > v[i]) for j in range(len(v)) if j != i)
        keep.append(not dominated)
    return np.array(keep, dtype=bool)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3), st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=30),
       st.lists(st.sampled_from(["maximize", "minimize"]), min_size=3, max_size=3))
def test_pareto_mask_matches_brute_force(m, rows, dirs):
    values = np.array(rows, dtype=float)[:, :m]
    directions = dirs[:m]
    assert (pareto_mask(values, directions) == brute_force(values, directions)).all()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4), st.booleans()), min_size=1,
                max_size=25),
       st.lists(st.sampled_from(["maximize", "minimize"]), min_size=2, max_size=3))
def test_front_and_front_size_are_optunas_best_trials(rows, dirs):
    """The front (from the study's rows) and the front size on the progress lines (from the study)
    are the trials Optuna's ``study.best_trials`` returns: duplicates included, trials that violate
    a constraint left out."""
    import optuna

    m = len(dirs)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(directions=dirs, study_name="s", storage=storage)
    study.set_metric_names([f"v{i}" for i in range(m)])
    study.add_trials([optuna.trial.create_trial(values=list(r[:m]), constraints={"c": 1.0 if r[3] else -1.0})
                      for r in rows])
    expected = sorted(t.number for t in study.best_trials)
    assert front_size(study) == len(expected)
    assert sorted(pareto_front(load_trials(storage, "s"))["number"]) == expected


def test_a_row_with_nan_is_compared_with_none():
    values = np.array([[1.0, 1.0], [np.nan, 0.0], [2.0, 2.0], [1.0, 1.0]])
    assert pareto_mask(values, ["minimize", "minimize"]).tolist() == [True, True, False, True]
    assert pareto_mask(np.empty((0, 2)), ["minimize", "maximize"]).tolist() == []


def test_pareto_front_dataframe():
    df = pd.DataFrame({
        "number": [0, 1, 2, 3, 4],
        "state": ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL", "COMPLETE"],
        "accuracy": [0.5, 0.9, 0.4, 1.0, 0.9],
        "latency_ms": [1.0, 3.0, 2.0, 0.1, 3.5],
    })
    df.attrs["objectives"] = {"accuracy": "maximize", "latency_ms": "minimize"}
    front = pareto_front(df)
    assert list(front["number"]) == [1, 0]  # sorted by accuracy, best first; FAIL ignored
    assert front.attrs["objectives"] == df.attrs["objectives"]


def test_pareto_mask_errors():
    with pytest.raises(ValueError):
        pareto_mask(np.zeros((3, 2)), ["maximize"])
    with pytest.raises(ValueError):
        pareto_mask(np.zeros((3, 1)), ["up"])


def test_pareto_front_leaves_out_infeasible_trials():
    df = pd.DataFrame({
        "number": [0, 1, 2, 3],
        "state": ["COMPLETE", "COMPLETE", "COMPLETE", "RUNNING"],
        "accuracy": [0.5, 0.99, 0.4, None],
        "latency_ms": [1.0, 0.1, 2.0, None],
        "feasible": pd.array([True, False, True, None], dtype="boolean"),
    })
    df.attrs["objectives"] = {"accuracy": "maximize", "latency_ms": "minimize"}
    assert list(pareto_front(df)["number"]) == [0]  # 1 dominates both but violates a constraint
    assert list(pareto_front(df.drop(columns="feasible"))["number"]) == [1]
    assert list(feasible_complete(df)["number"]) == [0, 2]


def test_wall_time_is_from_asked_to_told():
    """A trial's wall time, as the ``duration_s`` column reports it, is its datetime_complete minus its
    datetime_start (Optuna's record, the same span under every backend); none while it runs."""
    import datetime

    import optuna

    from nas.store.trial_attrs import wall_seconds

    start = datetime.datetime(2024, 5, 1, 12, 0, 0)
    done = optuna.trial.create_trial(values=[1.0])
    done.datetime_start, done.datetime_complete = start, start + datetime.timedelta(seconds=12.5)
    running = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING)
    assert wall_seconds(done) == 12.5 and wall_seconds(running) is None
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="w", storage=storage)
    study.add_trials([done, running])
    df = load_trials(storage, "w")
    assert df["duration_s"].iloc[0] == 12.5 and pd.isna(df["duration_s"].iloc[1])
    assert df["datetime_start"].iloc[0] == start
