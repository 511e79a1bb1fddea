"""Confirmation (`nas confirm`, nas.confirm, the space's confirm: section): more seeds for the candidates,
one paired timing of all of them, stored with the study; resumable after a stop or a kill, run at the end
of a search when the space says so."""

import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

import evaluators.evaluation
import nas
import nas.engine.confirm
from evaluators.confirmation import ConfirmConfig, combine, extra_seeds, seed_settings
from nas.api import SearchStopped
from nas.engine.config import load_checked
from nas.store.confirmations import Confirmations, confirmed_metrics
from nas.store.trial_attrs import CONFIRM_RUN_ATTR
from search_spaces import ArchSpec
from tests.cli_helpers import invoke

TINY = Path(nas.__file__).resolve().parents[1] / "search_spaces" / "spaces" / "tiny.yaml"
SEED = 3


def tiny_space(**changes) -> dict:
    """The built-in space `tiny` at its smallest (seconds per trial), confirmed with 2 seeds in all."""
    space = yaml.safe_load(TINY.read_text())
    space["task"]["params"].update(n_train=64, n_test=32)
    space["train"] = {"steps": 3, "batch_size": 16, "lr": 0.01}
    space["latency"] = {"batch_size": 1, "threads": 1, "warmup": 1, "repeats": 2, "max_seconds": 0.1}
    space["confirm"] = {"seeds": 2, "rounds": 4}
    space.update(changes)
    return space


def every_complete_trial(df, p_min):
    """Candidates without nas.results.uncertainty: every complete trial (tests choose them directly)."""
    return sorted(int(n) for n in df.loc[df["state"] == "COMPLETE", "number"])


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A finished 3-trial study of the tiny space (not confirmed); each test works on a copy."""
    folder = tmp_path_factory.mktemp("confirm")
    nas.search(tiny_space(), study="s", storage=f"sqlite:///{folder}/s.db", trials=3, sampler="random", seed=SEED)
    return folder / "s.db"


@pytest.fixture
def study_url(searched, tmp_path, monkeypatch):
    with sqlite3.connect(searched) as src, sqlite3.connect(tmp_path / "s.db") as dst:  # its write-ahead log too
        src.backup(dst)
    monkeypatch.setattr(nas.engine.confirm, "candidates", every_complete_trial)
    return f"sqlite:///{tmp_path}/s.db"


@pytest.fixture
def trained(monkeypatch):
    """Every (arch_id, seed) evaluate() is called with, in order, while the real one runs."""
    calls, real = [], evaluators.evaluation.evaluate

    def spy(arch, settings, **kw):
        calls.append((arch.arch_id, settings.seed))
        return real(arch, settings, **kw)

    monkeypatch.setattr(evaluators.evaluation, "evaluate", spy)
    return calls


def _study(url):
    return optuna.load_study(study_name="s", storage=url)


def test_confirmed_values_are_the_means_of_the_independently_computed_seeds(study_url, trained):
    before = nas.load_trials(study_url, "s")
    assert not before["confirmed"].any()  # a search without confirm.auto confirms nothing
    df = nas.confirm("s", storage=study_url)
    report = df.attrs["confirmation"]
    assert report["candidates"] == [0, 1, 2] and report["trainings"] == 3 and report["timings"] == 1
    assert report["line"].startswith("study s: confirmed 3 candidates (pass 1): 3 trainings, 1 paired timings, wall ")
    assert sorted(trained) == sorted((a, SEED + 1000) for a in before["arch_id"])  # one extra seed each
    checked = load_checked("<dict>", text=yaml.safe_dump(tiny_space(), sort_keys=False))
    for _, row in df.iterrows():
        arch = ArchSpec.from_json(row["arch_json"])
        # each seed computed again on its own, through the search's path
        seeds = [evaluators.evaluation.evaluate(arch, checked.settings_for(s))["accuracy"] for s in (SEED, SEED + 1000)]
        first = before.set_index("number").loc[row["number"]]
        assert seeds[0] == pytest.approx(first["accuracy"])  # the search's own seed, reproduced
        assert row["confirmed"] and row["confirm_pass"] == 1
        assert row["accuracy"] == pytest.approx(statistics.mean(seeds))
        assert row["accuracy_std"] == pytest.approx(statistics.stdev(seeds)) and row["accuracy_n"] == 2
        assert row["accuracy_first"] == first["accuracy"] and row["latency_ms_first"] == first["latency_ms"]
        assert row["latency_ci_low"] <= row["latency_ms"] <= row["latency_ci_high"]
        assert row["latency_runs"] == 4  # confirm.rounds: one sample per round
    assert df.loc[df["latency_ms"].idxmin(), "latency_ratio"] == 1.0  # the fastest median, against itself
    # Optuna never changes a finished trial: its values stay the first ones
    assert [t.values[0] for t in _study(study_url).trials] == list(before["accuracy"])
    # done: a rerun trains nothing
    trained.clear()
    again = nas.confirm("s", storage=study_url)
    assert trained == [] and again.attrs["confirmation"]["already"] and "nothing to do" in again.attrs["confirmation"]["line"]
    pd.testing.assert_series_equal(again["accuracy"], df["accuracy"])


def test_more_seeds_extend_a_pass_and_a_new_pass_is_independent_of_it(study_url, trained):
    nas.confirm("s", storage=study_url)
    trained.clear()
    df = nas.confirm("s", storage=study_url, seeds=3)  # the done pass, one more seed each
    assert [s for _, s in trained] == [SEED + 2000] * 3 and df.attrs["confirmation"]["pass_number"] == 1
    assert (df["accuracy_n"] == 3).all() and df.attrs["confirmation"]["timings"] == 0  # the timing stands
    trained.clear()
    df = nas.confirm("s", storage=study_url, seeds=1, new_pass=True)
    assert df.attrs["confirmation"]["pass_number"] == 2 and (df["confirm_pass"] == 2).all()
    assert [s for _, s in trained] == [SEED + 100_000] * 3  # none of the first pass's seeds, nor the search's
    assert (df["accuracy_n"] == 1).all() and df.get("accuracy_std", pd.Series([None])).isna().all()  # one seed: no std


def test_a_stopped_confirmation_goes_on_where_it_stopped(study_url, trained, monkeypatch):
    """SIGTERM while the second result is stored: the result is kept, the command says how to go
    on, and the next run trains only what is missing."""
    save = Confirmations.save_run
    saved = []

    def save_then_stop(self, *a, **kw):
        save(self, *a, **kw)
        saved.append(a)
        if len(saved) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while the write's block holds stop signals

    monkeypatch.setattr(Confirmations, "save_run", save_then_stop)
    with pytest.raises(SearchStopped, match="terminated by SIGTERM: the confirmation of study s kept every result") as e:
        nas.confirm("s", storage=study_url)
    assert e.value.signum == signal.SIGTERM and f"nas confirm --study s --storage {study_url}" in str(e.value)
    runs = _stored_runs(study_url)
    assert len(runs) == 2 and len(trained) == 2
    monkeypatch.setattr(Confirmations, "save_run", save)
    first_run = list(trained)
    df = nas.confirm("s", storage=study_url)
    assert df.attrs["confirmation"]["trainings"] == 1 and len(trained) == 3
    assert not set(trained[2:]) & set(first_run)  # nothing redone
    assert _stored_runs(study_url).items() >= runs.items()  # nothing lost
    assert df["confirmed"].all()


def _stored_runs(url) -> dict:
    return {k: v for k, v in _study(url).user_attrs.items() if k.startswith(CONFIRM_RUN_ATTR)}


KILLED = """
import sys, time
import nas, nas.engine.confirm
from nas.store.confirmations import Confirmations

nas.engine.confirm.candidates = lambda df, p_min: sorted(int(n) for n in df.loc[df["state"] == "COMPLETE", "number"])
save = Confirmations.save_run

def save_then_hang(self, *a, **kw):
    save(self, *a, **kw)
    print("stored", flush=True)
    time.sleep(600)  # killed here

Confirmations.save_run = save_then_hang
nas.confirm("s", storage=sys.argv[1])
"""


def test_a_killed_confirmation_loses_nothing_and_redoes_nothing(study_url, trained, tmp_path):
    """SIGKILL (no clean-up at all) once the first seed is stored: the next run keeps it and trains
    the others only."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED), study_url], stdout=subprocess.PIPE,
                             text=True, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    try:
        assert child.stdout.readline().strip() == "stored"
    finally:
        child.kill()
        child.wait(timeout=60)
    runs = _stored_runs(study_url)
    assert len(runs) == 1
    (stored_seed,) = [int(k.rsplit(":", 1)[1]) for k in runs]
    df = nas.confirm("s", storage=study_url)
    assert df.attrs["confirmation"]["trainings"] == 2 and len(trained) == 2
    stored_number = int(next(iter(runs)).split(":")[2])
    stored_arch = df.set_index("number").loc[stored_number, "arch_id"]
    assert (stored_arch, stored_seed) not in trained
    assert _stored_runs(study_url).items() >= runs.items()
    row = df.set_index("number").loc[stored_number]
    assert row["accuracy"] == pytest.approx((row["accuracy_first"] + runs[next(iter(runs))]["accuracy"]) / 2)


def test_auto_confirm_runs_when_a_search_ends(tmp_path, monkeypatch, trained):
    monkeypatch.setattr(nas.engine.confirm, "candidates", every_complete_trial)
    url = f"sqlite:///{tmp_path}/auto.db"
    df = nas.search(tiny_space(confirm={"seeds": 2, "rounds": 3, "auto": True}), study="auto", storage=url, trials=2,
                    sampler="random", seed=SEED)
    assert df.attrs["confirmation"]["trainings"] == 2 and df["confirmed"].all()
    assert [s for _, s in trained if s != SEED] == [SEED + 1000] * 2  # one extra seed per trial (the search's
    # own seed shows here too when this module is the first to import the search's objective)
    assert set(confirmed_metrics(_study_named(url, "auto").user_attrs)) == {0, 1}


def _study_named(url, name):
    return optuna.load_study(study_name=name, storage=url)


def test_nas_confirm_prints_the_candidates_and_ends_with_its_cost(study_url, tmp_path):
    r = invoke("confirm", "--study", "s", "--storage", study_url, "--rounds", "3", cwd=tmp_path, check=True)
    assert "confirmed (3 candidates)" in r.stdout and "latency ratio" in r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith("study s: confirmed 3 candidates (pass 1): 3 trainings")


def test_nas_confirm_refuses_a_bad_option_in_one_line(capsys):
    from nas.cli import main

    with pytest.raises(SystemExit) as e:
        main(["confirm", "--study", "s", "--seeds", "0"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: Invalid value for '--seeds': 0 is not allowed (an int >= 1)")
    assert len(err.splitlines()) == 1


def test_candidates_are_the_front_and_the_trials_likely_to_join_it():
    df = pd.DataFrame({"number": [0, 1, 2, 3, 4, 5, 6], "state": ["COMPLETE"] * 6 + ["FAIL"],
                       "feasible": [True, True, True, False, True, True, None],
                       "reused_from": [None, None, None, None, None, 0, None],
                       "accuracy": [0.9, 0.5, 0.85, 0.95, 0.4, 0.9, None],
                       "latency_ms": [2.0, 1.0, 2.1, 0.5, 3.0, 2.0, None]})
    df.attrs["objectives"] = {"accuracy": "maximize", "latency_ms": "minimize"}
    p = pd.Series([1.0, 1.0, 0.3, 0.9, 0.01, 1.0, 0.0], index=df.index)
    # front: 0, 1 and 5 (0's twin: confirmed through 0); likely: 2; infeasible 3 and failed 6 never
    assert nas.engine.confirm.candidates(df, 0.05, p_front=lambda d: p) == [0, 1, 2]
    assert nas.engine.confirm.candidates(df, 0.5, p_front=lambda d: p) == [0, 1]


def test_seeds_are_pooled_with_the_searchs_and_never_repeat():
    first = {"accuracy": 0.5, "accuracy_std": 0.1, "accuracy_n": 2, "latency_ms": 1.0, "params": 100.0}
    runs = [{"accuracy": 0.6, "final_loss": 1.0}, {"accuracy": 0.7, "final_loss": 2.0}]
    out = combine(runs, first)
    everything = [0.5 - 0.1 / np.sqrt(2), 0.5 + 0.1 / np.sqrt(2), 0.6, 0.7]  # mean 0.5 and std 0.1 over two seeds
    assert out["accuracy"] == pytest.approx(np.mean(everything)) and out["accuracy_n"] == 4
    assert out["accuracy_std"] == pytest.approx(np.std(everything, ddof=1))
    assert out["final_loss"] == 1.5 and out["final_loss_n"] == 2 and "latency_ms" not in out and "params" not in out
    assert combine([{"accuracy": 0.6}]) == {"accuracy": 0.6, "accuracy_n": 1}
    assert extra_seeds(7, have=1, want=3) == [1007, 2007]
    assert extra_seeds(7, have=3, want=3) == []
    assert not set(extra_seeds(7, have=1, want=3, pass_number=2)) & {7, 1007, 2007}
    assert extra_seeds(2**32 - 1, have=1, want=2) == [999]  # numpy's seed range
    quick = seed_settings(load_checked("tiny").settings, 5)
    assert quick.seed == 5 and quick.ladder == () and quick.profiles == () and quick.latency.repeats == 1


@pytest.mark.parametrize("section, message", [
    ({"seeds": 0}, r"confirm\.seeds: 0 is not allowed \(an int >= 1\)"),
    ({"p_min": 0}, r"confirm\.p_min: 0 is not allowed \(a number in \(0, 1\]\)"),
    ({"auto": "yes"}, r"confirm\.auto: 'yes' is not allowed \(true or false\)"),
    ({"sedes": 3}, r"confirm\.sedes: unknown setting"),
])
def test_the_confirm_section_is_checked_where_it_is_read(section, message):
    with pytest.raises(nas.UserError, match=message):
        load_checked("<dict>", text=yaml.safe_dump(tiny_space(confirm=section), sort_keys=False))
    assert load_checked("tiny").confirm == ConfirmConfig(seeds=3, p_min=0.05, rounds=30, auto=False)
