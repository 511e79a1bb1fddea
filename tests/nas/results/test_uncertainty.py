"""p_front, unresolved_with and floors on hand-made trials: the Monte Carlo against a naive loop and
exact probabilities, seeded draws, old studies without uncertainty columns, floors that keep
near-chance models off the front."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nas.results.floors import beats_floors, floor_text
from nas.results.trials import excluded_counts, feasible_complete, pareto_front, pareto_mask
from nas.results.uncertainty import Z95, front_masks, intervals, p_front, unresolved_with
from nas.results.volume import hypervolume

OBJ = {"accuracy": "maximize", "latency_ms": "minimize"}


def trials(**cols) -> pd.DataFrame:
    """A trials table as load_trials gives it: number, state COMPLETE unless given, the columns."""
    n = len(next(iter(cols.values())))
    df = pd.DataFrame({"number": range(n), "state": ["COMPLETE"] * n, **cols})
    df.attrs["objectives"] = dict(OBJ)
    return df


def naive_p_front(df: pd.DataFrame, samples: int, seed: int) -> np.ndarray:
    """The documented model drawn and counted with loops, independently of the module: accuracy
    Normal(mean, std / sqrt(n)); latency log-normal with the stored 95% interval; a trial is on a
    draw's front when no other trial is at least as good on both and better on one. A one-seed
    trial takes the pooled std of the others."""
    rng = np.random.default_rng(seed + 1)
    rows = list(df.itertuples())
    seeded = [r for r in rows if r.accuracy_n >= 2]
    pooled = math.sqrt(sum((r.accuracy_n - 1) * r.accuracy_std**2 for r in seeded) / sum(r.accuracy_n - 1 for r in seeded))
    sems = [(r.accuracy_std if r.accuracy_n >= 2 else pooled) / math.sqrt(r.accuracy_n) for r in rows]
    sigmas = [(math.log(r.latency_ci_high) - math.log(r.latency_ci_low)) / (2 * Z95) for r in rows]
    counts = np.zeros(len(df))
    for _ in range(samples):
        acc = [r.accuracy + sem * rng.standard_normal() for r, sem in zip(rows, sems)]
        lat = [r.latency_ms * math.exp(sigma * rng.standard_normal()) for r, sigma in zip(rows, sigmas)]
        for i in range(len(df)):
            dominated = any(acc[j] >= acc[i] and lat[j] <= lat[i] and (acc[j] > acc[i] or lat[j] < lat[i])
                            for j in range(len(df)) if j != i)
            counts[i] += not dominated
    return counts / samples


def test_p_front_matches_a_naive_loop_over_the_documented_model():
    df = trials(accuracy=[0.80, 0.82, 0.60, 0.81, 0.50], accuracy_std=[0.03, 0.04, 0.02, 0.05, 0.0],
                accuracy_n=[3, 3, 2, 3, 1], latency_ms=[1.0, 1.1, 0.9, 1.05, 3.0],
                latency_ci_low=[0.9, 0.95, 0.85, 1.0, 2.9], latency_ci_high=[1.1, 1.3, 0.95, 1.1, 3.1])
    ours = p_front(df, samples=4000, seed=0).to_numpy()
    naive = naive_p_front(df, samples=1500, seed=0)
    assert np.abs(ours - naive).max() < 0.06, (ours, naive)  # two Monte Carlo estimates, ~0.013 and ~0.02 s.e.
    assert ours[4] == 0.0 and 0.05 < ours[0] < 0.95  # far behind; a member whose place is a draw


def test_far_ahead_is_one_far_behind_is_zero_and_failed_trials_are_zero():
    df = trials(accuracy=[0.95, 0.30, 0.99, 0.90], accuracy_std=[0.01, 0.01, 0.01, 0.01], accuracy_n=[4, 4, 4, 4],
                latency_ms=[1.0, 5.0, 0.1, 1.5], latency_ci_low=[0.95, 4.8, 0.09, 1.4],
                latency_ci_high=[1.05, 5.2, 0.11, 1.6])
    df.loc[2, "state"] = "FAIL"  # would dominate everything, but failed
    p = p_front(df, seed=3)
    assert p.tolist() == [1.0, 0.0, 0.0, 0.0] and p.name == "p_front"
    assert list(p.index) == list(df.index)


def test_identical_trials_share_the_front_exactly_as_computed_by_hand():
    exact = trials(accuracy=[0.8, 0.8], latency_ms=[1.0, 1.0])  # no uncertainty: a tie, both non-dominated
    assert p_front(exact).tolist() == [1.0, 1.0]
    # the same noise on both objectives: a trial is dominated only when the other is better on both,
    # probability 1/2 x 1/2 (independent continuous draws), so each is on the front with 3/4
    noisy = trials(accuracy=[0.8, 0.8], accuracy_std=[0.05, 0.05], accuracy_n=[2, 2], latency_ms=[1.0, 1.0],
                   latency_ci_low=[0.8, 0.8], latency_ci_high=[1.25, 1.25])
    assert p_front(noisy, samples=20000).to_numpy() == pytest.approx([0.75, 0.75], abs=0.015)
    # one objective exact and tied, the other noisy: the faster of the two draws is on the front
    half = trials(accuracy=[0.8, 0.8], latency_ms=[1.0, 1.0], latency_ci_low=[0.8, 0.8], latency_ci_high=[1.25, 1.25])
    assert p_front(half, samples=20000).to_numpy() == pytest.approx([0.5, 0.5], abs=0.015)


def test_one_objective_agrees_with_the_normal_probability():
    """Two trials, accuracy only: A ~ N(0.80, 0.02), B ~ N(0.78, 0.02); A is on the front when it is
    at least B, probability Phi(0.02 / (0.02 sqrt 2))."""
    df = trials(accuracy=[0.80, 0.78], accuracy_std=[0.02 * math.sqrt(2)] * 2, accuracy_n=[2, 2])
    p = p_front(df, objectives={"accuracy": "maximize"}, samples=40000)
    phi = 0.5 * (1 + math.erf(1 / math.sqrt(2) / math.sqrt(2)))
    assert p.to_numpy() == pytest.approx([phi, 1 - phi], abs=0.01)


def test_draws_are_seeded():
    df = trials(accuracy=[0.80, 0.81, 0.79], accuracy_std=[0.03] * 3, accuracy_n=[3] * 3, latency_ms=[1.0, 1.1, 0.9])
    assert p_front(df, seed=7).equals(p_front(df, seed=7))
    assert not p_front(df, seed=7).equals(p_front(df, seed=8))
    with pytest.raises(ValueError, match="samples"):
        p_front(df, samples=0)


def test_one_seed_trials_take_the_pooled_seed_to_seed_spread():
    df = trials(accuracy=[0.80, 0.79, 0.2, 0.21], accuracy_std=[np.nan, np.nan, 0.06, 0.08], accuracy_n=[1, 1, 3, 5],
                latency_ms=[1.0, 0.9, 5.0, 5.0])
    lo, hi = intervals(df, ["accuracy"])["accuracy"]
    pooled = math.sqrt((2 * 0.06**2 + 4 * 0.08**2) / 6)
    assert hi[0] - df.accuracy[0] == pytest.approx(Z95 * pooled)  # n = 1: sem = pooled std
    assert hi[2] - df.accuracy[2] == pytest.approx(Z95 * 0.06 / math.sqrt(3))
    p = p_front(df)
    assert 0.3 < p[0] < 0.7 and p[1] == 1.0  # 1 is faster for sure; whether it is also as accurate is a draw
    lonely = df.assign(accuracy_std=np.nan, accuracy_n=1)  # no trial has two seeds: nothing is known
    assert p_front(lonely).tolist() == [1.0, 1.0, 0.0, 0.0]


def test_old_studies_without_uncertainty_columns():
    """A study made before seeds were counted: no accuracy_std/_n, no latency_ci_low/_high. Without
    latency_ci, p_front is the point front; the old relative latency_ci is its median's interval."""
    df = trials(accuracy=[0.8, 0.9, 0.7, 0.85], latency_ms=[1.0, 2.0, 1.5, 2.5])
    front = pareto_mask(df[list(OBJ)].to_numpy(float), list(OBJ.values()))
    assert p_front(df).tolist() == front.astype(float).tolist()
    assert pareto_front(df)["unresolved_with"].tolist() == [[], []]
    old = df.assign(latency_ci=[0.3, 0.3, 0.3, 0.3])  # half-width / median
    lo, hi = intervals(old, ["latency_ms"])["latency_ms"]
    assert lo.tolist() == pytest.approx([0.7, 1.4, 1.05, 1.75]) and hi.tolist() == pytest.approx([1.3, 2.6, 1.95, 3.25])
    p = p_front(old)
    assert 0 < p[2] < 0.2 and 0 < p[3] < 0.5  # 2.5 ms may be faster than 2.0 ms: trial 3 can join the front
    assert p_front(old).equals(p_front(old.assign(latency_ci=[[0.7, 1.3], [1.4, 2.6], [1.05, 1.95], [1.75, 3.25]])))


def test_a_mix_of_stored_ends_and_old_intervals_is_read_from_float_columns():
    """Interval ends stored for some trials (NaN for older ones, which carry the relative latency_ci): the
    float columns load_trials makes can reach us as read-only arrays, and the gaps are filled from
    latency_ci without writing into them (a search's end, `nas resume`, failed on it)."""
    df = trials(accuracy=[0.8, 0.9, 0.7, 0.85], latency_ms=[1.0, 2.0, 1.5, 2.5]).assign(
        latency_ci=[0.3, 0.3, 0.3, 0.3], latency_ci_low=[0.9, np.nan, 1.4, np.nan],
        latency_ci_high=[1.1, np.nan, 1.6, np.nan])  # pandas >= 3: copy-on-write, read-only views
    lo, hi = intervals(df, ["latency_ms"])["latency_ms"]
    p = p_front(df)
    assert lo.tolist() == pytest.approx([0.9, 1.4, 1.4, 1.75]) and hi.tolist() == pytest.approx([1.1, 2.6, 1.6, 3.25])
    assert df["latency_ci_low"].isna().sum() == 2 and len(p) == 4  # the frame itself is unchanged


def test_unresolved_with_lists_the_trials_that_could_dominate_a_member():
    df = trials(accuracy=[0.80, 0.81, 0.60, 0.79], accuracy_std=[0.02] * 4, accuracy_n=[4] * 4,
                latency_ms=[1.0, 1.02, 0.5, 2.0], latency_ci_low=[0.9, 0.92, 0.49, 1.9],
                latency_ci_high=[1.1, 1.12, 0.51, 2.1])
    front = pareto_front(df)
    got = dict(zip(front.number, front.unresolved_with))
    # 0 and 1 could swap either way (accuracy within noise, latency intervals touch); 2 is far
    # faster, and nothing is near it; 3 is dominated and slower than 0 beyond its interval
    assert got == {0: [1], 1: [0], 2: []}
    assert unresolved_with(df).index.tolist() == front.sort_index().index.tolist()
    assert front.p_front[2] == 1.0 and front.p_front[0] < 0.9


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 10), st.integers(1, 3), st.integers(0, 2**16))
def test_front_masks_is_pareto_mask_on_every_draw(n, m, seed):
    rng = np.random.default_rng(seed)
    loss = rng.integers(0, 3, (6, n, m)).astype(float)  # small integers: ties and duplicates
    loss[rng.random(loss.shape) < 0.05] = np.nan
    eligible = rng.random((6, n)) < 0.8
    got = front_masks(loss, eligible)
    for d in range(6):
        want = np.zeros(n, dtype=bool)
        rows = np.flatnonzero(eligible[d])
        want[rows] = pareto_mask(loss[d, rows], ["minimize"] * m)
        assert (got[d] == want).all()


CHANCE = {"accuracy": {"above": 1 / 32}}


def test_floors_keep_sub_chance_members_off_the_front():
    """The benchmarks/deploy-fronts case: the cheapest models score near or under chance; a floor
    at chance keeps them off the front, the hypervolume and the counts, as a constraint would."""
    df = trials(accuracy=[0.08, 0.026, 0.5, 0.9, 0.031], latency_ms=[0.1, 0.05, 1.0, 2.0, 0.01])
    df.attrs["config"] = {"floors": CHANCE}  # as load_trials reads a study's stored config
    assert beats_floors(df, CHANCE).tolist() == [True, False, True, True, False]  # 1/32 = 0.03125
    assert sorted(pareto_front(df).number) == [0, 2, 3]
    assert sorted(pareto_front(df, floors={}).number) == [0, 2, 3, 4]  # without: the cheapest is on it
    assert feasible_complete(df).number.tolist() == [0, 2, 3] and excluded_counts(df) == (0, 2)
    counted = df.iloc[[0, 2, 3]].copy()
    counted.attrs = {"objectives": dict(OBJ)}
    unfloored = df.copy()
    unfloored.attrs = {**df.attrs, "floors": {}}  # df.attrs["floors"] wins over the stored config's
    assert hypervolume(df) == hypervolume(counted) != hypervolume(unfloored)
    assert p_front(df)[[1, 4]].tolist() == [0.0, 0.0]
    assert floor_text(CHANCE) == "accuracy > 0.03125"
    stricter = pareto_front(df, floors={"accuracy": {"above": 0.1}})
    assert sorted(stricter.number) == [2, 3]


def test_a_floor_is_applied_to_each_draw():
    """A trial whose accuracy is near the floor is on the front only in the draws where it beats it."""
    df = trials(accuracy=[0.04, 0.6], accuracy_std=[0.02, 0.01], accuracy_n=[4, 4], latency_ms=[0.1, 1.0])
    p = p_front(df, floors={"accuracy": {"above": 0.04}}, samples=20000)
    assert p[0] == pytest.approx(0.5, abs=0.015) and p[1] == 1.0
    assert p_front(df, floors={"accuracy": {"above": 0.2}})[0] == 0.0
    assert p_front(df, floors={"bits_per_byte": {"below": 8.0}}).tolist() == [0.0, 0.0]  # the metric is missing


@pytest.fixture
def floored(tmp_path):
    """A study as `nas search` leaves one whose space sets `floors: {accuracy: chance}` (vocabulary
    32): trial 1 is under chance, and would be on the front without the floor (it is the fastest)."""
    import optuna

    from nas.engine.config import SearchConfig
    from nas.store.study import CONFIG_ATTR
    from nas.store.trial_attrs import METRICS_KEY
    from search_spaces.space import resolve_space

    url = f"sqlite:///{tmp_path}/f.db"
    cfg = SearchConfig(space="tiny", space_yaml=resolve_space("tiny").read_text(), study="f", storage=url, trials=4,
                       floors=CHANCE)
    study = optuna.create_study(study_name="f", storage=url, directions=list(OBJ.values()))
    study.set_metric_names(list(OBJ))
    study.set_user_attr(CONFIG_ATTR, cfg.to_json())
    for acc, lat in [(0.08, 0.1), (0.02, 0.05), (0.5, 1.0), (0.9, 2.0)]:
        metrics = {"accuracy": acc, "latency_ms": lat, "latency_ci": 0.02, "params": 1000.0}
        study.add_trial(optuna.trial.create_trial(values=[acc, lat], user_attrs={METRICS_KEY: metrics}))
    return tmp_path, url, study


def test_a_study_with_floors_reads_them_from_its_config(floored):
    from nas import load_trials
    from nas.results.trials import front_size
    from tests.cli_helpers import invoke

    d, url, study = floored
    df = load_trials(url, "f")
    assert sorted(pareto_front(df).number) == [0, 2, 3] and front_size(study) == 3  # the progress lines agree
    r = invoke("pareto", "--study", "f", "--storage", url, cwd=d, check=True)
    assert "p_front" in r.stdout and "3 of 3 complete trials; 1 below a floor (accuracy > 0.03125)" in r.stdout
    r = invoke("pareto", "--study", "f", "--storage", url, "--format", "csv", cwd=d, check=True)
    assert r.stdout.splitlines()[0].endswith(",p_front,unresolved_with")
    r = invoke("status", "--study", "f", "--storage", url, cwd=d, check=True)
    assert "accuracy > 0.03125" in r.stdout and "1 below a floor" in r.stdout
    assert "3 of 3 members have p_front >= 0.9" in r.stdout and "confirmed" not in r.stdout


def test_status_and_compare_say_when_values_are_confirmed(floored, monkeypatch):
    """With the `confirmed` column that `nas confirm` leaves (the column holds the confirmed value),
    status and compare say which numbers are confirmed; without it (above) they say nothing."""
    import nas.results.trials as trials_module
    from tests.cli_helpers import invoke

    d, url, _ = floored
    frame = trials_module.trials_frame  # what load_trials and the commands build their rows with

    def confirmed_frame(*args, **kwargs):
        df = frame(*args, **kwargs)
        return df.assign(confirmed=pd.array([False, False, False, True], dtype="boolean"))

    monkeypatch.setattr(trials_module, "trials_frame", confirmed_frame)
    r = invoke("status", "--study", "f", "--storage", url, cwd=d, check=True)
    assert "1 trial confirmed (nas confirm)" in r.stdout and "0.9 (confirmed)" in r.stdout
    r = invoke("compare", "--study", "f", "--study", "f", "--storage", url, "--storage", url, cwd=d, check=True)
    assert "f: 1 trial confirmed (nas confirm)" in r.stdout and "(confirmed)" in r.stdout
    r = invoke("pareto", "--study", "f", "--storage", url, "--format", "json", cwd=d, check=True)
    assert [row["confirmed"] for row in json.loads(r.stdout)] == [True, False, False]
