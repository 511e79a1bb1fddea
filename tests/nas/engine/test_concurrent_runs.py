"""Several `nas search` / `nas resume` processes on one study: the budget is reached exactly, and a
live run's trials are told from a dead run's by their heartbeat."""

import os
import re
import subprocess

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from tests.cli_helpers import NAS, write_space

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")]


def test_two_searches_on_one_sqlite_study_stop_at_the_budget_exactly(tmp_path):
    space = write_space(tmp_path, steps=100)
    url = f"sqlite:///{tmp_path}/c.db"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    args = [*NAS, "search", "--space", str(space), "--study", "c", "--storage", url, "--trials", "3",
            "--heartbeat", "1", "--sampler", "random"]
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # started together: they also race to create the study
    try:
        said = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, said):
        assert p.returncode == 0, err
        assert "earlier run" not in err and "Traceback" not in err
    trials = optuna.load_study(study_name="c", storage=url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3, [(t.number, t.state) for t in trials]
    assert sum("created study c" in err for _, err in said) == 1  # one made it, the other continued it


def _age(url: str, number: int, seconds: int) -> None:
    """Make trial ``number``'s last heartbeat ``seconds`` old (as if its process had died then)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE trial_heartbeats SET heartbeat = datetime('now', :ago) WHERE trial_id = "
                             "(SELECT trial_id FROM trials WHERE number = :n)"),
                     {"ago": f"-{seconds} seconds", "n": number})
    engine.dispose()


def _study_with_running_trials(tmp_path, trials=3):
    from nas.engine.config import SearchConfig
    from nas.store.study import create_or_load_study

    space = write_space(tmp_path, steps=1)
    config = SearchConfig(space=str(space), space_yaml=space.read_text(), study="r",
                          storage=f"sqlite:///{tmp_path}/r.db", trials=trials, sampler="random",
                          heartbeat_interval=1, grace_period=4)
    study, config, _ = create_or_load_study(config)
    return study, config


def test_running_trials_are_told_apart_by_their_heartbeat(tmp_path):
    from nas.engine.budget import report_running

    study, config = _study_with_running_trials(tmp_path)
    live, dead, silent = study.ask(), study.ask(), study.ask()
    for t in (live, dead):
        study._storage.record_heartbeat(t._trial_id)
    _age(config.storage, dead.number, 30)
    said = []
    report_running(study, config, log=said.append)
    assert re.fullmatch(rf"trial #{dead.number}: no heartbeat for 3[01]s \(over 4s: the run that owned it died\), "
                        r"failed; queued again as #3", said[0]), said
    assert said[1].startswith(f"2 trial(s) RUNNING in another run with a live heartbeat: #{live.number} (heartbeat ")
    # the trial that never beat (its process died right after asking it) got a heartbeat, to age out
    assert f"#{silent.number} (heartbeat " in said[1] and "left to that run" in said[1]
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {live.number: TrialState.RUNNING, dead.number: TrialState.FAIL,
                      silent.number: TrialState.RUNNING, 3: TrialState.WAITING}
    _age(config.storage, silent.number, 30)
    said.clear()
    report_running(study, config, log=said.append)
    assert said[0].startswith(f"trial #{silent.number}: no heartbeat for 30s")


def test_a_trial_starts_only_while_finished_plus_running_is_below_the_budget(tmp_path):
    from nas.engine.budget import ask_within_budget

    study, config = _study_with_running_trials(tmp_path, trials=3)
    first = ask_within_budget(study, config).trial
    study.tell(first, [0.5, 1.0])
    other = ask_within_budget(study, config)  # as if another process asked: RUNNING, heartbeat fresh
    assert other.trial is not None and other.finished == 1
    third = ask_within_budget(study, config)
    assert third.trial is not None and set(third.running) == {other.trial.number}
    full = ask_within_budget(study, config)  # 1 finished + 2 running = 3: no room
    assert full.trial is None and full.finished == 1 and set(full.running) == {other.trial.number, third.trial.number}
    _age(config.storage, other.trial.number, 30)  # its process died: failed, queued again, and that retry runs
    retry = ask_within_budget(study, config, log=lambda m: None)
    assert retry.trial is not None
    assert study._storage.get_trial(retry.trial._trial_id).system_attrs["retry_history"] == [other.trial.number]
    study.tell(third.trial, [0.5, 1.0])
    study.tell(retry.trial, [0.5, 1.0])
    done = ask_within_budget(study, config)
    assert done.trial is None and done.finished == 3 and not done.running
