"""A search with constraints through the engine: fronts, hypervolume, status, plots and exports
count only the trials that satisfy the space's constraints, as Optuna's ``study.best_trials`` does."""

import json

import numpy as np
import optuna
import pytest

import nas
from nas.results.files import sidecar_path
from nas.results.trials import pareto_mask
from nas.results.volume import hypervolume_of, reference_point
from tests.cli_helpers import invoke as run_nas
from tests.cli_helpers import write_space

pytestmark = pytest.mark.slow

# accuracy up, params down; params must lie in [5000, 20000]. The architectures here have 4576,
# 7808, 15264 or 27872 parameters, so both bounds are violated by some trials, and the smallest
# model (always on the unconstrained front, params being an objective) is infeasible.
SPACE = """
name: bounded
task: {name: mqar, params: {vocab_size: 32, seq_len: 16, num_kv_pairs: 2, n_train: 64, n_test: 16}}
objectives: {accuracy: maximize, params: minimize}
constraints: {params: {min: 5000, max: 20000}}
train: {steps: 3, batch_size: 8, lr: 0.01}
latency: {repeats: 2, warmup: 1, max_seconds: 0.1}
arch:
  stages:
    - depth: [1, 2]
      dim: [16, 32]
      mixer: {choices: {softmax: {heads: [1, 2]}}}
"""
NAMES = ["params<=20000", "params>=5000"]


@pytest.fixture(scope="module")
def bounded(tmp_path_factory):
    d = tmp_path_factory.mktemp("constraints")
    space = write_space(d, text=SPACE)
    url = f"sqlite:///{d}/b.db"
    run_nas("search", "--space", space, "--study", "b", "--storage", url, "--trials", 6, "--sampler", "random",
            "--seed", 4, cwd=d, check=True)  # seed 4 samples all four sizes
    return d, url, optuna.load_study(study_name="b", storage=url)


def _numbers(trials):
    return sorted(t.number for t in trials)


def test_load_trials_has_feasibility_and_constraint_columns(bounded):
    _, url, study = bounded
    df = nas.load_trials(url, "b")
    assert sorted(df.attrs["constraints"]) == NAMES
    for t in study.trials:
        row = df[df.number == t.number].iloc[0]
        assert {n: row[f"constraint.{n}"] for n in t.constraints} == t.constraints  # Optuna's own values
        assert t.constraints == {"params<=20000": row["params"] - 20000, "params>=5000": 5000 - row["params"]}
        assert bool(row["feasible"]) == (5000 <= row["params"] <= 20000)
    assert df.feasible.any() and not df.feasible.all()  # the study exercises both


def test_front_is_optunas_best_trials(bounded):
    d, url, study = bounded
    df = nas.load_trials(url, "b")
    expected = _numbers(study.best_trials)
    assert expected and _numbers(nas.pareto_front(df).itertuples()) == expected
    r = run_nas("pareto", "--study", "b", "--storage", url, "--format", "json", cwd=d, check=True)
    assert sorted(row["number"] for row in json.loads(r.stdout)) == expected
    r = run_nas("pareto", "--study", "b", "--storage", url, cwd=d, check=True)
    assert r.stdout.count("params") == 1  # the objective column, not a second params column
    # ignoring the constraints would put an infeasible trial on the front: the check above can fail
    done = df[df.state == "COMPLETE"]
    unconstrained = done[pareto_mask(done[["accuracy", "params"]].to_numpy(float), ["maximize", "minimize"])]
    assert not unconstrained.feasible.all()
    from nas.results.trials import front_size  # the front size on the progress lines

    assert front_size(study) == len(expected)
    r = run_nas("status", "--study", "b", "--storage", url, cwd=d, check=True)
    n_bad = int((~done.feasible).sum())
    assert f"{len(expected)} of {len(done) - n_bad} feasible complete trials; {n_bad} violate" in r.stdout


def test_hypervolume_counts_feasible_trials_only(bounded):
    _, url, study = bounded
    df = nas.load_trials(url, "b")
    feasible = [t for t in study.trials if t.state.name == "COMPLETE" and all(v <= 0 for v in t.constraints.values())]
    acc = np.array([t.values[0] for t in feasible])
    par = np.array([t.values[1] for t in feasible])
    ref = {"accuracy": acc.min() - 0.1 * np.ptp(acc), "params": par.max() + 0.1 * np.ptp(par)}
    assert reference_point(df) == pytest.approx(ref)
    front = np.array([[-t.values[0], t.values[1]] for t in study.best_trials])
    assert nas.hypervolume(df) == pytest.approx(hypervolume_of(front, [-ref["accuracy"], ref["params"]]))


def test_plot_shows_infeasible_trials_apart(bounded, tmp_path):
    _, url, _ = bounded
    from nas.results import plots

    df = nas.load_trials(url, "b")
    fig = plots.front_figure(df, plots.axes_pairs(df), color=None)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "violates a constraint" in labels
    ax_points = {c.get_label(): c.get_offsets() for c in ax.collections}
    bad = df[(df.state == "COMPLETE") & ~df.feasible.fillna(True)]
    assert sorted(map(tuple, ax_points["violates a constraint"])) == sorted(zip(bad.accuracy, bad.params))
    html = plots.front_html(df, plots.axes_pairs(df), None)
    assert "violates a constraint" in html and "violates params" in html


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_export_round_trip_keeps_meaning(bounded, suffix):
    d, url, study = bounded
    out = d / f"trials{suffix}"
    run_nas("export", "--study", "b", "--storage", url, "--out", out, cwd=d, check=True)
    assert sidecar_path(out).exists() == (suffix == ".csv")
    df, back = nas.load_trials(url, "b"), nas.load_trials(out)
    assert back.attrs == json.loads(json.dumps(df.attrs))
    assert back.attrs["objectives"] == {"accuracy": "maximize", "params": "minimize"}
    assert list(back.columns) == list(df.columns)
    assert str(back.feasible.dtype) == "boolean" and back.feasible.equals(df.feasible)
    assert _numbers(nas.pareto_front(back).itertuples()) == _numbers(study.best_trials)
    assert nas.hypervolume(back) == pytest.approx(nas.hypervolume(df))
    assert nas.load_trials(str(out), "b").attrs["study"] == "b"


def test_export_read_errors(bounded, tmp_path):
    d, url, _ = bounded
    for name in ("t.csv", "t.parquet"):
        run_nas("export", "--study", "b", "--storage", url, "--out", tmp_path / name, cwd=d, check=True)
    with pytest.raises(nas.errors.UserError, match="holds study 'b', not 'other'"):
        nas.load_trials(tmp_path / "t.parquet", "other")
    sidecar_path(tmp_path / "t.csv").unlink()
    with pytest.raises(nas.errors.UserError, match="t.csv.meta.json"):
        nas.load_trials(tmp_path / "t.csv")
    plain = tmp_path / "plain.parquet"
    nas.load_trials(url, "b")[["number", "accuracy", "params"]].to_parquet(plain)
    with pytest.raises(nas.errors.UserError, match="no mixer-nas metadata"):
        nas.load_trials(plain)


def test_report_and_compare_count_feasible_trials_only(bounded, tmp_path):
    d, url, study = bounded
    from nas.results.report import write_report

    df = nas.load_trials(url, "b")
    n_ok, n_bad = int(df.feasible.sum()), int((~df.feasible).sum())
    md = write_report(df, tmp_path / "rep")["md"].read_text()
    assert f"{len(study.best_trials)} of {n_ok} feasible complete trials are on the front" in md
    assert f"{n_ok} of {n_ok + n_bad} complete trials satisfy the constraints" in md
    r = run_nas("compare", "--study", "b", "--study", "b", "--storage", url, "--storage", url, cwd=d, check=True)
    assert f"b: front of {len(study.best_trials)} of {n_ok} feasible complete trials; {n_bad} violate" in r.stdout
    assert f"largest hypervolume: b ({nas.hypervolume(df):.4g})" in r.stdout  # common reference = this study's own
