"""End to end: the CLI as a user runs it (subprocesses against a temporary SQLite file)."""

import json

import pandas as pd
import pytest

import nas
from tests.cli_helpers import invoke as run_nas
from tests.cli_helpers import write_space

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    space = write_space(d)
    url = f"sqlite:///{d}/s.db"
    r = run_nas("search", "--space", space, "--study", "s", "--storage", url, "--trials", 4, "--seed", 1, cwd=d, check=True)
    return d, url, r


def test_search_output_and_store(study):
    d, url, r = study
    assert "Pareto front" in r.stdout
    assert "embed[causal] |" in r.stdout  # summaries are printed as text, not read as markup
    assert "trial 1/4" in r.stderr and "[4/4]" in r.stderr  # progress lines (not a terminal here)
    df = nas.load_trials(url, "s")
    assert len(df[df.state != "WAITING"]) >= 4 and (df.state == "COMPLETE").sum() >= 4
    assert df.attrs["objectives"] == {"accuracy": "maximize", "latency_ms": "minimize"}
    for col in ("number", "state", "arch_id", "accuracy", "latency_ms", "params", "flops", "latency_spread",
                "arch.depth", "arch.s0.dim", "arch.s0.b0.mixer", "error"):
        assert col in df.columns, col
    assert not (d / "results").exists()  # an explicit --storage writes nowhere else


def test_pareto_matches_independent_dominance_check(study):
    d, url, _ = study
    df = nas.load_trials(url, "s")
    done = df[df.state == "COMPLETE"]
    mask = []
    for _, a in done.iterrows():
        dominated = any((b.accuracy >= a.accuracy and b.latency_ms <= a.latency_ms) and
                        (b.accuracy > a.accuracy or b.latency_ms < a.latency_ms) for _, b in done.iterrows())
        mask.append(not dominated)
    expected = set(done[mask].number)
    assert set(nas.pareto_front(df).number) == expected
    r = run_nas("pareto", "--study", "s", "--storage", url, "--format", "json", cwd=d, check=True)
    assert {row["number"] for row in json.loads(r.stdout)} == expected
    r = run_nas("pareto", "--study", "s", "--storage", url, "--format", "csv", cwd=d, check=True)
    assert r.stdout.splitlines()[0].startswith("number,arch_id,accuracy,latency_ms")
    assert len(r.stdout.strip().splitlines()) == len(expected) + 1


def test_export_status_show(study):
    d, url, _ = study
    run_nas("export", "--study", "s", "--storage", url, "--out", d / "t.csv", cwd=d, check=True)
    run_nas("export", "--study", "s", "--storage", url, "--out", d / "t.parquet", cwd=d, check=True)
    a, b = pd.read_csv(d / "t.csv"), pd.read_parquet(d / "t.parquet")
    assert len(a) == len(b) == len(nas.load_trials(url, "s"))
    assert list(a.columns) == list(b.columns)
    r = run_nas("status", "--study", "s", "--storage", url, cwd=d, check=True)
    assert "4/4 finished" in r.stdout and "front size" in r.stdout
    r = run_nas("show", "--study", "s", "--storage", url, "--trial", 0, cwd=d, check=True)
    assert '"stages"' in r.stdout and "model summary" in r.stdout and "total" in r.stdout


def test_resume_raises_budget_and_dedups(study, tmp_path):
    d, url, _ = study
    r = run_nas("resume", "--study", "s", "--storage", url, "--trials", 6, cwd=d, check=True)
    df = nas.load_trials(url, "s")
    assert (df.state == "COMPLETE").sum() >= 6
    # the raised budget is stored: a later plain resume keeps it, and status reports it
    assert "6/6 finished" in run_nas("status", "--study", "s", "--storage", url, cwd=d, check=True).stdout
    r = run_nas("search", "--space", d / "space.yaml", "--study", "s", "--storage", url, "--sampler", "gp", cwd=d,
                check=True)
    assert "ignored: --sampler gp" in r.stderr
    # every arch_id was trained once at most; repeats carry reused_from
    trained = df[(df.state == "COMPLETE") & df.reused_from.isna()]
    assert trained.arch_id.is_unique


def test_repeat_arch_reuses_metrics(tmp_path):
    space = write_space(tmp_path, text="""
        task: {name: mqar, params: {vocab_size: 32, seq_len: 16, num_kv_pairs: 2, n_train: 64, n_test: 16}}
        train: {steps: 3, batch_size: 8}
        latency: {repeats: 3, max_seconds: 0.1}
        arch:
          stages:
            - depth: 1
              dim: 16
              mixer: {choices: {softmax: {heads: [1, 2]}}}
    """)
    url = f"sqlite:///{tmp_path}/r.db"
    run_nas("search", "--space", space, "--study", "r", "--storage", url, "--trials", 5, "--sampler", "random",
            cwd=tmp_path, check=True)
    df = nas.load_trials(url, "r")
    assert (df.state == "COMPLETE").sum() == 5 and df.arch_id.nunique() == 2
    reused = df[df.reused_from.notna()]
    assert len(reused) == 3
    for _, row in reused.iterrows():
        src = df[df.number == row.reused_from].iloc[0]
        assert src.arch_id == row.arch_id and src.accuracy == row.accuracy and src.latency_ms == row.latency_ms


def test_default_storage_under_results(tmp_path):
    space = write_space(tmp_path, steps=2)
    run_nas("search", "--space", space, "--study", "dflt", "--trials", 1, cwd=tmp_path, check=True)
    assert (tmp_path / "results" / "dflt.db").exists()
    r = run_nas("status", "--study", "dflt", cwd=tmp_path, check=True)
    assert "1/1 finished" in r.stdout


def test_spaces_lists_builtins(tmp_path):
    r = run_nas("spaces", cwd=tmp_path, check=True)
    for name in ("tiny", "seq-hybrid", "signal"):
        assert name in r.stdout
    assert "mqar" in r.stdout and "softmax" in r.stdout


def test_search_with_baselines(tmp_path):
    space = write_space(tmp_path, steps=2)
    url = f"sqlite:///{tmp_path}/b.db"
    r = run_nas("search", "--space", space, "--study", "b", "--storage", url, "--trials", 5, "--baselines",
                cwd=tmp_path, check=True)
    assert "queued baselines:" in r.stderr and "spectformer skipped" in r.stderr  # causal task: no spectral design
    df = nas.load_trials(url, "b")
    marked = df[df.baseline.notna()]
    assert len(marked) >= 3 and set(marked.baseline) <= {"transformer", "shvit", "hyena", "striped_hyena"}
    # a second search does not queue them again
    r = run_nas("search", "--space", space, "--study", "b", "--storage", url, "--trials", 6, "--baselines",
                cwd=tmp_path, check=True)
    assert "none (already in the study)" in r.stderr
