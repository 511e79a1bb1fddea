"""The Python API (nas.search, nas.resume, nas.list_studies, nas.delete_study) and the CLI's
conventions: python -m nas, --version, NAS_STORAGE, nas studies, -q / -v."""

import io
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

import nas
from nas.api import SearchStopped, plan_search
from tests.cli_helpers import assert_one_line_error, invoke, write_space

TINY = Path(nas.__file__).resolve().parents[1] / "search_spaces" / "spaces" / "tiny.yaml"
PLUGIN = '''
from evaluators.metrics import register_metric


@register_metric("api_half_params", "minimize", at="init")
def half_params(model, task, settings) -> float:
    """Half the model's parameters: a user metric the test checks against the engine's count."""
    return sum(p.numel() for p in model.parameters()) / 2
'''


def tiny_dict(**changes) -> dict:
    """The built-in space `tiny` as a dict, at the smallest settings (seconds per trial)."""
    space = yaml.safe_load(TINY.read_text())
    space["task"]["params"].update(n_train=64, n_test=32)
    space["train"] = {"steps": 2, "batch_size": 16, "lr": 0.01}
    space["latency"] = {"batch_size": 1, "threads": 1, "warmup": 1, "repeats": 2, "max_seconds": 0.1}
    space.update(changes)
    return space


def same_trials(df, url, study):
    """``df`` holds the rows of nas.load_trials (with the storage named in its attrs)."""
    expected = nas.load_trials(url, study)
    pd.testing.assert_frame_equal(df, expected)
    assert df.attrs == {**expected.attrs, "storage": url}


def test_search_then_resume_return_the_studys_trials(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/api.db"
    with caplog.at_level(logging.INFO, logger="nas"):
        df = nas.search(tiny_dict(), study="api", storage=url, trials=2, sampler="random", seed=3)
    same_trials(df, url, "api")
    assert len(df) == 2 and (df["state"] == "COMPLETE").all() and df.attrs["finished"] == 2
    assert df.attrs["config"]["space"] == "<dict>" and df.attrs["config"]["sampler"] == "random"
    said = caplog.text
    assert f"created study api in {url}: space <dict>, sampler random, 0/2 trials finished" in said
    assert "[1/2] trial #0 COMPLETE" in said and "[2/2] trial #1 COMPLETE" in said  # one line per trial

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nas"):
        df = nas.search(tiny_dict(), study="api", storage=url, trials=3, sampler="tpe")  # exists: budget 3
    assert "keeps its stored settings" in caplog.text and "ignored: --sampler tpe" in caplog.text
    assert len(df) == 3 and df.attrs["finished"] == 3 and df.attrs["config"]["trials"] == 3
    df = nas.resume("api", storage=url, trials=4)
    same_trials(df, url, "api")
    assert len(df) == 4 and df.attrs["finished"] == 4 and df.attrs["config"]["trials"] == 4
    assert not (tmp_path / "results").exists()  # the named storage, not the default one


def test_a_stopped_search_says_how_to_resume_and_resume_finishes_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/stop.db"

    class StopAtSecond:  # a Ctrl-C while the second candidate is being evaluated
        def __init__(self, total):
            self.started = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def start(self, *a):
            self.started += 1
            if self.started == 2:
                raise KeyboardInterrupt

        def end(self, *a):
            pass

    with pytest.raises(SearchStopped) as e:
        nas.search(tiny_dict(), study="stop", storage=url, trials=2, progress=StopAtSecond)
    assert isinstance(e.value, KeyboardInterrupt) and e.value.signum == 2
    assert str(e.value) == f"interrupted: 1/2 trials finished and saved. Resume with:\n  nas resume --study stop --storage {url}"
    df = nas.resume("stop", storage=url)
    assert df.attrs["finished"] == 2
    stopped = df[df["number"] == 1].iloc[0]
    assert stopped["state"] == "FAIL" and "interrupted" in stopped["error"]
    assert df[df["number"] == 2].iloc[0]["state"] == "COMPLETE"  # its re-run
    assert (df["state"] == "COMPLETE").sum() == 2


def test_a_dict_space_loads_and_stores_its_plugins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "half.py").write_text(PLUGIN)
    url = f"sqlite:///{tmp_path}/dict.db"
    space = tiny_dict(plugins=["half.py"], objectives={"accuracy": "maximize", "api_half_params": "minimize"})
    space["arch"]["stages"][0]["dim"] = (32,)  # a tuple is a list, as in YAML
    df = nas.search(space, study="d", storage=url, trials=1)
    assert df.loc[0, "state"] == "COMPLETE"
    assert df.loc[0, "api_half_params"] == df.loc[0, "params"] / 2  # the engine's own count, halved
    stored = df.attrs["config"]
    assert [p["name"] for p in stored["plugins"]] == ["half.py"] and "register_metric" in stored["plugins"][0]["code"]
    assert yaml.safe_load(stored["space_yaml"])["arch"]["stages"][0]["dim"] == [32]


@pytest.mark.parametrize("call,fragment", [
    (lambda: nas.search(tiny_dict(), study="e", trials=0), "trials: 0 is not allowed (an int in [1, 1000000000])"),
    (lambda: nas.search(tiny_dict(), study="e", sampler="cma"), "--sampler: 'cma' is not one of"),
    (lambda: nas.search(tiny_dict(), study="e", backend="slurm"), "--backend: unknown backend 'slurm'"),
    (lambda: nas.search("no-such-space", study="e"), "no-such-space: unknown space; built-in spaces:"),
    (lambda: nas.search(42, study="e"), "space: 42 is not allowed (a built-in space name"),
    (lambda: nas.search({**tiny_dict(), "trials": {1: 2}}, study="e"), "<dict>: trials: key 1 is not allowed"),
    (lambda: nas.search(tiny_dict(plugins=["gone.py"]), study="e"), "<dict>: plugins[0]: plugin 'gone.py': cannot read"),
    (lambda: nas.search(tiny_dict(train={"steps": 0}), study="e"), "<dict>: train.steps: 0 is not allowed"),
    (lambda: nas.search(tiny_dict(), study="e", backend="ray", options={"latency_lock": "x"}), "--latency-lock: 'x'"),
    (lambda: nas.search(tiny_dict(), study="a/b"), "--study: 'a/b' is not a valid study name"),
    (lambda: nas.search({k: v for k, v in tiny_dict().items() if k != "name"}, study=None), "study: None is not"),
    (lambda: nas.resume("absent"), "no study database at sqlite:///results/absent.db"),
    (lambda: nas.resume("absent", trials=-1), "trials: -1 is not allowed"),
    (lambda: nas.search(tiny_dict(), study="e", seed="3"), "--seed: '3' is not allowed (an integer)"),
    (lambda: nas.search(tiny_dict(), study="e", seed=1.0), "--seed: 1.0 is not allowed (an integer)"),
    (lambda: nas.search(tiny_dict(), study="e", trials=10**12), "trials: 1000000000000 is not allowed (an int in [1, 1000000000])"),
    (lambda: nas.search(tiny_dict(), study="e", options={"ashа": False}), "options: unknown key 'ashа'; allowed: ["),
    (lambda: nas.search(tiny_dict(), study="e", options={"population": 8}), "'population_size'"),
    (lambda: nas.search(tiny_dict(), study="e", plugins=5), "plugins: 5 is not allowed"),
    (lambda: nas.search(tiny_dict(), study="e", plugins=["ok.py", 3]), "plugins: ['ok.py', 3] is not allowed"),
    (lambda: nas.search(tiny_dict(), study="e", baselines="yes"), "baselines: 'yes' is not allowed (True or False)"),
    (lambda: nas.search(tiny_dict(), study="e", progress="bar"), "progress: 'bar' is not allowed"),
    (lambda: nas.search(tiny_dict(), study="e", sampler=["tpe"]), "--sampler: ['tpe'] is not one of"),
    (lambda: nas.resume("absent", trials=10**12), "trials: 1000000000000 is not allowed"),
    (lambda: nas.load_model(5), "path: 5 is not allowed"),
])
def test_bad_arguments_raise_user_error_and_write_nothing(call, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NAS_STORAGE", raising=False)
    with pytest.raises(nas.UserError) as e:
        call()
    assert fragment in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_one_plugin_may_be_given_as_a_string(tmp_path, monkeypatch):
    """``plugins="half.py"`` is one plugin, not the four named h, a, l and f."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "half.py").write_text(PLUGIN)
    for given in ("half.py", tmp_path / "half.py"):
        plan = plan_search(tiny_dict(), study="p", plugins=given)
        assert [p["name"] for p in plan.config.plugins] == [str(given)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["half.py"]


def test_a_space_by_name_or_path_is_stored_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NAS_STORAGE", raising=False)
    plan = plan_search("tiny", study=None)  # checked, nothing written
    assert (plan.config.space, plan.config.study, plan.config.storage) == ("tiny", "tiny", "sqlite:///results/tiny.db")
    assert plan.config.space_yaml == TINY.read_text() and plan.config.trials == 8
    plan = plan_search(TINY, study="p", storage="sqlite:///x.db", trials=2, seed=5, heartbeat=2)
    assert (plan.config.space, plan.config.trials, plan.config.seed, plan.config.grace_period) == (str(TINY), 2, 5, 8)
    assert list(tmp_path.iterdir()) == []


def test_plan_search_checks_the_seed_and_the_storage_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    deep = f"sqlite:///{tmp_path}/a/b/x.db"
    assert plan_search(TINY, study="p", storage=deep, trials=2).config.storage == deep  # a/b would be made
    for kw, fragment in [({"seed": 2**32 - 2}, "--seed: 4294967294 is out of range; with --trials 2"),
                         ({"storage": "sqlite://"}, "an in-memory SQLite database keeps nothing"),
                         ({"storage": "redis://host/0"}, "scheme 'redis' is not one of sqlite, postgresql, mysql"),
                         ({"storage": f"sqlite:///{tmp_path}"}, "is a directory")]:
        with pytest.raises(nas.UserError, match=re.escape(fragment)):
            plan_search(TINY, **{"study": "p", "trials": 2, **kw})
    assert list(tmp_path.iterdir()) == []


def test_one_search_reads_its_space_once(tmp_path, monkeypatch):
    """The planner, the study, the backend and the objective share the space read once: one parse of
    the file and one build of its evaluation settings per search, and per resume (its stored text)."""
    import search_spaces.space as space_module
    from evaluators.evaluation import EvalSettings

    monkeypatch.chdir(tmp_path)
    calls = {"parse": 0, "settings": 0}
    parse, from_space = space_module.parse_space, EvalSettings.from_space.__func__

    def counted_parse(*args, **kw):
        calls["parse"] += 1
        return parse(*args, **kw)

    def counted_settings(cls, *args, **kw):
        calls["settings"] += 1
        return from_space(cls, *args, **kw)

    monkeypatch.setattr(space_module, "parse_space", counted_parse)
    monkeypatch.setattr(EvalSettings, "from_space", classmethod(counted_settings))
    path, url = tmp_path / "space.yaml", f"sqlite:///{tmp_path}/once.db"
    path.write_text(yaml.safe_dump(tiny_dict(), sort_keys=False))
    for run in (lambda: nas.search(str(path), study="once", storage=url, trials=1, sampler="random"),
                lambda: nas.resume("once", storage=url, trials=2),
                lambda: nas.search(str(path), study="once", storage=url)):  # the study exists: its budget is met
        calls.update(parse=0, settings=0)
        df = run()
        assert calls == {"parse": 1, "settings": 1}
    assert len(df) == 2 and (df["state"] == "COMPLETE").all()


def test_train_seeds_store_mean_std_and_count_and_one_seed_stores_as_before(tmp_path, monkeypatch):
    """train.seeds: 2 gives each quality metric its _std and _n columns; a one-seed search stores its
    trial as before (the candidate, metrics, constraints), plus each metric as an attribute of its own."""
    from nas.store.trial_attrs import (
        ARCH_ID_KEY,
        ARCH_KEY,
        CONSTRAINTS_KEY,
        METRICS_KEY,
        SUMMARY_KEY,
        metric_attr,
        metrics_of,
    )

    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/seeds.db"
    two = tiny_dict()
    two["train"]["seeds"] = 2
    row = nas.search(two, study="two", storage=url, trials=1, sampler="random").iloc[0]
    assert row["accuracy_n"] == 2 and row["final_loss_n"] == 2 and row["train_loss_sum_std"] > 0
    assert row["latency_ci_low"] <= row["latency_ms"] <= row["latency_ci_high"]
    one = nas.search(tiny_dict(), study="one", storage=url, trials=1, sampler="random")
    assert not [c for c in one.columns if c.endswith(("_std", "_n"))]
    [t] = optuna.load_study(study_name="one", storage=url).trials
    metrics = metrics_of(t)
    assert set(t.user_attrs) == {ARCH_ID_KEY, ARCH_KEY, SUMMARY_KEY, METRICS_KEY, CONSTRAINTS_KEY,
                                 *map(metric_attr, metrics)}
    assert {k: t.user_attrs[metric_attr(k)] for k in metrics} == metrics


# ------------------------------------------------------------------------------ the CLI's conventions
def test_python_m_nas_and_version(tmp_path):
    version = metadata.version("mixer-nas")
    r = subprocess.run([sys.executable, "-m", "nas", "--version"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert (r.returncode, r.stdout, r.stderr) == (0, f"mixer-nas {version}\n", "")
    assert nas.__version__ == version
    r = invoke("--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == f"mixer-nas {version}\n"


def test_quiet_prints_the_result_only_and_verbose_adds_debug_and_optuna(tmp_path):
    space = write_space(tmp_path, steps=1)
    r = invoke("-q", "search", "--space", space, "--study", "q", "--trials", 1, cwd=tmp_path, check=True)
    assert r.stderr == "" and "Pareto front (1 of 1 complete trials)" in r.stdout
    r = invoke("--quiet", "status", "--study", "nope", cwd=tmp_path)  # errors still show
    assert_one_line_error(r, "no study database")
    r = invoke("-v", "search", "--space", space, "--study", "v", "--trials", 1, cwd=tmp_path, check=True)
    assert "A new study created in RDB with name: v" in r.stderr  # Optuna's INFO line
    assert f"space {space}: task mqar, plugins none; study v in sqlite:///results/v.db" in r.stderr  # debug
    assert "created study v in sqlite:///results/v.db" in r.stderr and "[1/1] trial #0" in r.stderr
    r = invoke("search", "--space", space, "--study", "n", "--trials", 1, cwd=tmp_path, check=True)
    assert "created study n" in r.stderr and "A new study created" not in r.stderr and "plugins none;" not in r.stderr


def test_quiet_and_verbose_exclude_each_other(capsys):
    from nas.cli import main

    with pytest.raises(SystemExit) as e:
        main(["-q", "-v", "spaces"])
    assert e.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "-q/--quiet and -v/--verbose exclude each other" in lines[0], lines


def test_nas_storage_is_the_default_storage_and_storage_wins(tmp_path, monkeypatch):
    env_url = f"sqlite:///{tmp_path}/env.db"
    monkeypatch.setenv("NAS_STORAGE", env_url)
    space = write_space(tmp_path, steps=1)
    invoke("search", "--space", space, "--study", "s", "--trials", 1, cwd=tmp_path, check=True)
    assert (tmp_path / "env.db").exists() and not (tmp_path / "results").exists()
    invoke("status", "--study", "s", cwd=tmp_path, check=True)  # found in env.db: there is no other
    assert nas.resume("s").attrs["storage"] == env_url  # the API reads it too (budget reached: nothing run)
    r = invoke("status", "--study", "s", "--storage", f"sqlite:///{tmp_path}/other.db", cwd=tmp_path)
    assert_one_line_error(r, "no study database at", "other.db")  # --storage wins over NAS_STORAGE
    studies = json.loads(invoke("studies", "--format", "json", cwd=tmp_path, check=True).stdout)
    assert [(s["study"], s["storage"]) for s in studies] == [("s", env_url)]
    monkeypatch.delenv("NAS_STORAGE")
    assert_one_line_error(invoke("status", "--study", "s", cwd=tmp_path), "sqlite:///results/s.db")


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    """A folder with results/a.db (3 trials), results/b.db (a study `nas search` did not make) and
    results/notes.db (an SQLite file that is not an Optuna storage)."""
    root = tmp_path_factory.mktemp("studies")
    old = Path.cwd()
    try:
        os.chdir(root)
        nas.search(tiny_dict(), study="a", trials=3, sampler="random", seed=1)
    finally:
        os.chdir(old)
    optuna.create_study(study_name="b", storage=f"sqlite:///{root}/results/b.db", directions=["minimize"])
    with sqlite3.connect(root / "results" / "notes.db") as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    return root


def test_studies_lists_each_study_with_its_trials_and_front(results_dir, monkeypatch):
    monkeypatch.chdir(results_dir)
    monkeypatch.delenv("NAS_STORAGE", raising=False)
    r = invoke("studies", "--format", "json", cwd=results_dir, check=True)
    assert "skipped results/notes.db: not an Optuna storage" in r.stderr
    rows = {s["study"]: s for s in json.loads(r.stdout)}
    assert sorted(rows) == ["a", "b"]
    df = nas.load_trials("sqlite:///results/a.db", "a")
    a = rows["a"]
    assert (a["space"], a["task"], a["finished"], a["budget"]) == ("<dict>", "mqar", 3, 3)
    assert a["complete"] == (df["state"] == "COMPLETE").sum() and a["fail"] == (df["state"] == "FAIL").sum()
    assert a["front"] == len(nas.pareto_front(df)) >= 1  # the results API's front, counted independently
    assert a["objectives"] == "accuracy max, latency_ms min" and a["note"] is None
    assert rows["b"]["finished"] == 0 and rows["b"]["space"] is None and "no stored config" in rows["b"]["note"]

    table = invoke("studies", cwd=results_dir, check=True).stdout
    line = next(row for row in table.splitlines() if "│ a " in row)
    cells = [c.strip() for c in line.strip("│ ").split("│")]
    assert cells[:4] == ["a", "<dict>", "mqar", "3/3"] and cells[-2] == str(a["front"])  # front, then storage
    one = invoke("studies", "--storage", "sqlite:///results/b.db", "--format", "csv", cwd=results_dir, check=True)
    assert pd.read_csv(io.StringIO(one.stdout))["study"].tolist() == ["b"]


def test_delete_study_from_python(results_dir, monkeypatch):
    monkeypatch.chdir(results_dir)
    monkeypatch.delenv("NAS_STORAGE", raising=False)
    nas.delete_study("b")
    assert nas.list_studies("sqlite:///results/b.db").empty
    with pytest.raises(nas.UserError, match="no study 'b'"):
        nas.delete_study("b")
    assert invoke("studies", "--storage", "sqlite:///results/b.db", cwd=results_dir, check=True).stderr.startswith(
        "no studies in sqlite:///results/b.db")


def test_a_search_stores_its_floors_resolved(tmp_path, monkeypatch):
    """The floors of a space are resolved once (chance: the task's level) and stored with the study's
    config, so every reader applies them from the study alone."""
    monkeypatch.chdir(tmp_path)
    space = yaml.safe_load(TINY.read_text())
    plan = plan_search({**space, "floors": {"accuracy": "chance"}}, study="fl", storage=f"sqlite:///{tmp_path}/f.db")
    assert plan.config.floors == {"accuracy": {"above": 1 / 32}} == plan.checked.floors
    assert json.loads(plan.config.to_json())["floors"] == plan.config.floors
    assert plan_search(TINY, study="p", storage=f"sqlite:///{tmp_path}/f.db").config.floors == {}
