"""The null evaluation (benchmarks/null_task.py): the engine alone, many trials, two processes on
one study; the budget is exact and no architecture is evaluated again once one trial of it finished."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.cli_helpers import NAS

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")]
SPACE = Path(__file__).resolve().parents[3] / "benchmarks" / "null.yaml"


@pytest.fixture
def forgets_its_plugin():
    """The null task's plugin, loaded in this process by the space, is forgotten afterwards (its module and
    its registry entries), as a fresh process would not have it: later tests count plugin modules."""
    import sys

    from kernels.registry import snapshot

    before, modules = snapshot(), set(sys.modules)
    yield
    for m in set(sys.modules) - modules:
        if m.startswith("mixer_nas_plugin_"):
            del sys.modules[m]
    before.restore()


def test_the_null_evaluation_is_deterministic_and_builds_nothing(forgets_its_plugin):
    import evaluators
    import search_spaces
    from evaluators.evaluation import EvalSettings, evaluate

    space = evaluators.load_space(str(SPACE))
    arch = search_spaces.sample(space, optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask())
    settings = EvalSettings(task="null_eval", task_params={"vocab_size": 32, "seq_len": 16})
    first, again = evaluate(arch, settings), evaluate(arch, settings)
    assert {k: v for k, v in first.items() if k != "eval_seconds"} == {k: v for k, v in again.items() if k != "eval_seconds"}
    assert 0.5 <= first["accuracy"] < 1 and first["latency_ms"] > 0 and first["eval_seconds"] < 0.1


def test_200_null_trials_in_two_processes_stop_at_the_budget_without_evaluating_twice(tmp_path):
    url = f"sqlite:///{tmp_path}/n.db"
    args = [*NAS, "search", "--space", str(SPACE), "--study", "n", "--storage", url, "--trials", "200",
            "--sampler", "random", "--heartbeat", "1"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        errs = [p.communicate(timeout=900)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], errs
    trials = optuna.load_study(study_name="n", storage=url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 200  # exactly the budget, nothing left RUNNING
    for t in trials:  # evaluated (not reused) only when no trial of its architecture had finished before it started
        if t.user_attrs.get("reused_from") is None:
            assert not [u.number for u in trials if u.user_attrs["arch_id"] == t.user_attrs["arch_id"]
                        and u.number != t.number and u.datetime_complete < t.datetime_start], t.number
    assert any(t.user_attrs.get("reused_from") is not None for t in trials)
