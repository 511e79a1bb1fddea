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


# ------------------------------------------------------------------------------ reading an export back
def _export(tmp_path, suffix, **attrs):
    """A tiny trials table exported as ``suffix``, with ``attrs`` over a valid set."""
    from nas.results.files import write_export

    df = pd.DataFrame({"number": [0, 1], "state": ["COMPLETE", "COMPLETE"], "accuracy": [0.5, 0.7],
                       "params": [10, 20], "feasible": pd.array([True, True], dtype="boolean")})
    df.attrs = {"objectives": {"accuracy": "maximize", "params": "minimize"}, "constraints": [], "study": "s", **attrs}
    path = tmp_path / f"t{suffix}"
    write_export(df, path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_an_export_reads_back_with_its_front(tmp_path, suffix):
    df = load_trials(_export(tmp_path, suffix))
    assert sorted(pareto_front(df)["number"]) == [0, 1]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("attrs,fragment", [
    ({"objectives": {"accuracy": "sideways", "params": "minimize"}}, "objectives.accuracy: 'sideways' is not one of"),
    ({"objectives": {"accuracy": "maximize", "loss": "minimize"}}, "objectives.loss: the table has no column 'loss'"),
    ({"objectives": {}}, "objectives: {} is not allowed"),
    ({"objectives": ["accuracy"]}, "objectives: ['accuracy'] is not allowed"),
    ({"constraints": "params<=5"}, "constraints: 'params<=5' is not allowed"),
], ids=["direction", "column", "empty", "list", "constraints"])
def test_an_export_whose_meaning_does_not_fit_its_table_is_refused_at_load(tmp_path, suffix, attrs, fragment):
    """Refused by load_trials, naming the metadata file, not by pareto_front later with a KeyError."""
    import nas
    from nas.results.files import sidecar_path

    path = _export(tmp_path, suffix, **attrs)
    with pytest.raises(nas.UserError) as e:
        load_trials(path)
    where = sidecar_path(path) if suffix == ".csv" else path
    assert str(e.value).startswith(f"{where}: ") and fragment in str(e.value) and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize("name,data,fragment", [
    ("junk.parquet", b"PAR1 this is not parquet", "junk.parquet: cannot be read as a Parquet file"),
    ("empty.parquet", b"", "empty.parquet: cannot be read as a Parquet file"),
    ("junk.csv", b"\x00\xff\xfe\x00 not text", "junk.csv: cannot be read as the CSV table"),
    ("empty.csv", b"", "empty.csv: cannot be read as the CSV table"),
])
def test_a_junk_export_file_is_one_line(tmp_path, name, data, fragment):
    import nas
    from nas.results.files import sidecar_path

    path = tmp_path / name
    path.write_bytes(data)
    sidecar_path(_export(tmp_path, ".csv")).rename(sidecar_path(path))  # a valid sidecar: the table is at fault
    with pytest.raises(nas.UserError) as e:
        load_trials(path)
    assert fragment in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_export_metadata_with_a_key_given_twice_is_refused(tmp_path):
    import nas
    from nas.results.files import sidecar_path

    side = sidecar_path(_export(tmp_path, ".csv"))
    side.write_text(side.read_text().replace('"format": 1,', '"format": 1, "format": 1,'))
    with pytest.raises(nas.UserError, match=r"t.csv.meta.json: not valid JSON \(key 'format' appears twice"):
        load_trials(tmp_path / "t.csv")


@pytest.mark.parametrize("source,study,fragment", [
    (42, None, "load_trials: 42 is not allowed"),
    ("sqlite:///x.db", 7, "load_trials: study 7 is not allowed"),
])
def test_load_trials_refuses_arguments_of_the_wrong_type(tmp_path, monkeypatch, source, study, fragment):
    import nas

    monkeypatch.chdir(tmp_path)
    with pytest.raises(nas.UserError, match=fragment):
        load_trials(source, study)
    assert list(tmp_path.iterdir()) == []
