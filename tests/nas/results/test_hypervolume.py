import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nas
from nas.results.volume import hypervolume_history, hypervolume_of, reference_point


def grid_count(points, ref):
    """Independent exact hypervolume for integer points (minimization): count the unit cells
    [c, c+1)^m below ``ref`` whose lower corner is weakly dominated by some point."""
    points = np.asarray(points)
    m = len(ref)
    lo = points.min(axis=0) if len(points) else np.asarray(ref)
    count = 0
    for cell in itertools.product(*(range(int(lo[i]), int(ref[i])) for i in range(m))):
        if np.any(np.all(points <= np.asarray(cell), axis=1)):
            count += 1
    return count


int_points = st.integers(1, 3).flatmap(
    lambda m: st.lists(st.tuples(*[st.integers(0, 6)] * m), min_size=0, max_size=12).map(
        lambda rows: (m, np.array(rows, dtype=float).reshape(-1, m))))


@settings(max_examples=150, deadline=None)
@given(int_points)
def test_exact_hypervolume_matches_grid_counting(case):
    m, pts = case
    ref = [7] * m
    assert hypervolume_of(pts, ref) == pytest.approx(grid_count(pts, ref))


@pytest.mark.parametrize("m", [2, 3, 4])
def test_hypervolume_matches_monte_carlo(m):
    rng = np.random.default_rng(0)
    pts = rng.random((15, m))
    ref = np.ones(m)
    sample = rng.random((200_000, m))
    dominated = np.zeros(len(sample), dtype=bool)
    for p in pts:
        dominated |= np.all(sample >= p, axis=1)
    mc = dominated.mean()  # the unit box has volume 1
    assert hypervolume_of(pts, ref) == pytest.approx(mc, abs=4 * np.sqrt(mc * (1 - mc) / len(sample)) + 1e-3)


def test_points_outside_reference_add_nothing():
    assert hypervolume_of(np.array([[2.0, 0.0], [0.0, 2.0]]), [1.0, 1.0]) == 0.0
    assert hypervolume_of(np.array([[0.0, 0.0]]), [1.0, 2.0]) == 2.0


def _df(acc, lat, states=None, params=None):
    df = pd.DataFrame({"number": range(len(acc)), "state": states or ["COMPLETE"] * len(acc),
                       "accuracy": acc, "latency_ms": lat})
    df.attrs["objectives"] = {"accuracy": "maximize", "latency_ms": "minimize"}
    if params is not None:
        df["params"] = params
        df.attrs["objectives"]["params"] = "minimize"
    return df


def test_default_reference_is_worst_finished_value_shifted_by_tenth_of_range():
    df = _df([0.5, 0.9, 0.7, None], [1.0, 3.0, 2.0, None], states=["COMPLETE"] * 3 + ["FAIL"])
    ref = reference_point(df)
    assert ref == pytest.approx({"accuracy": 0.5 - 0.04, "latency_ms": 3.0 + 0.2})
    # with a maximized objective, a front of (0.9, 3.0), (0.7, 2.0), (0.5, 1.0)
    expected = (0.9 - 0.46) * (3.2 - 3.0) + (0.7 - 0.46) * (3.0 - 2.0) + (0.5 - 0.46) * (2.0 - 1.0)
    assert nas.hypervolume(df) == pytest.approx(expected)
    assert nas.hypervolume(df, reference={"accuracy": 0.0, "latency_ms": 4.0}) == pytest.approx(
        0.9 * 1.0 + 0.7 * 1.0 + 0.5 * 1.0)
    assert nas.hypervolume(df, reference=[0.0, 4.0]) == nas.hypervolume(df, reference={"accuracy": 0.0, "latency_ms": 4.0})


def test_three_objectives_through_dataframe_match_grid_counting():
    rng = np.random.default_rng(1)
    acc, lat, par = rng.integers(0, 8, 10), rng.integers(0, 8, 10), rng.integers(0, 8, 10)
    df = _df(acc.astype(float), lat.astype(float), params=par.astype(float))
    ref = {"accuracy": -1.0, "latency_ms": 8.0, "params": 8.0}
    pts = np.stack([-acc, lat, par], axis=1)
    assert nas.hypervolume(df, reference=ref) == pytest.approx(grid_count(pts, [1, 8, 8]))


def test_matches_optuna_where_available():
    hv_mod = pytest.importorskip("optuna._hypervolume")
    rng = np.random.default_rng(2)
    pts = rng.random((20, 3))
    assert hypervolume_of(pts, np.ones(3)) == pytest.approx(hv_mod.compute_hypervolume(pts, np.ones(3)))


def test_history_is_monotone_and_ends_at_the_total():
    df = _df([0.5, 0.4, 0.9, 0.95, 0.3], [1.0, 2.0, 3.0, 2.5, 0.5],
             states=["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"])
    df.loc[2, ["accuracy", "latency_ms"]] = None
    h = hypervolume_history(df)
    assert list(h["k"]) == [1, 2, 3, 4]
    assert list(h["number"]) == [0, 1, 3, 4]  # the failed trial is not a step
    assert np.all(np.diff(h["hypervolume"]) >= 0)
    assert h["hypervolume"].iloc[1] == pytest.approx(h["hypervolume"].iloc[0])  # trial 1 is dominated
    assert h["hypervolume"].iloc[-1] == pytest.approx(nas.hypervolume(df))


def test_no_finished_trials():
    df = _df([None], [None], states=["FAIL"])
    assert nas.hypervolume(df) == 0.0
    assert hypervolume_history(df).empty
    with pytest.raises(ValueError):
        reference_point(df)


def test_only_feasible_trials_count():
    # trial 1 violates a constraint and would dominate everything: it must add no volume, move no
    # reference point and be no step of the history
    df = _df([2.0, 6.0, 4.0, 1.0], [3.0, 0.0, 1.0, 5.0])
    df["feasible"] = pd.array([True, False, True, True], dtype="boolean")
    pts = np.array([[-2.0, 3.0], [-4.0, 1.0], [-1.0, 5.0]])  # the feasible ones, both objectives minimized
    ref = reference_point(df)
    assert ref == {"accuracy": pytest.approx(1.0 - 0.3), "latency_ms": pytest.approx(5.0 + 0.4)}
    assert nas.hypervolume(df, reference={"accuracy": 0, "latency_ms": 6}) == pytest.approx(grid_count(pts, [0, 6]))
    everything = nas.hypervolume(df.drop(columns="feasible"), reference={"accuracy": 0, "latency_ms": 6})
    assert everything == pytest.approx(grid_count(np.vstack([pts, [[-6.0, 0.0]]]), [0, 6]))  # the test can fail
    h = hypervolume_history(df)
    assert list(h["number"]) == [0, 2, 3]
    assert h["hypervolume"].iloc[-1] == pytest.approx(nas.hypervolume(df))
