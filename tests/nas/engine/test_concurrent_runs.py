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


# ------------------------------------------------------------------ a process killed mid-trial
def _start_and_kill(study, config, arch_id="a1"):
    """Start a trial as a run would (heartbeat, candidate recorded), then let its process die."""
    t = study.ask()
    study._storage.record_heartbeat(t._trial_id)
    t.set_user_attr("arch_id", arch_id)
    _age(config.storage, t.number, 30)
    return t.number


def test_a_trial_whose_process_died_is_recorded_and_its_retry_runs_clean(tmp_path, caplog):
    """The resume that finds a dead run's trial fails it with the reason (the kernel's OOM killer
    leaves none), marks it not the architecture's outcome, queues it again once and says so; the
    retry runs as a fresh trial and the study reaches its budget."""
    import logging

    import nas
    from nas.engine.budget import DIED
    from nas.engine.objective import Objective

    study, config = _study_with_running_trials(tmp_path, trials=2)
    dead = _start_and_kill(study, config)
    with caplog.at_level(logging.INFO, logger="nas"):
        nas.resume("r", storage=config.storage)
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"trial #{dead} (a1): no heartbeat for 3") and m.endswith("queued again as #1") for m in said)
    assert ("1 trial(s) lost to a dead process (killed by the OS, e.g. out of memory): #0 (queued again as #1); a trial "
            "whose process died runs again at most 1 time(s)") in said
    trials = study.get_trials()
    assert trials[dead].state == TrialState.FAIL and trials[dead].user_attrs["worker_died"] is True
    assert trials[dead].user_attrs["error"] == DIED.format(grace=4)
    assert "the process running it died (killed by the OS, e.g. out of memory" in trials[dead].user_attrs["error"]
    assert Objective.twin(study, "a1", 99) is None  # a twin runs itself: the death was not the architecture's
    retry = trials[1]
    assert retry.state == TrialState.COMPLETE and not retry.user_attrs.get("worker_died") and not retry.user_attrs.get("error")
    assert [t.state for t in trials[2:]] == [TrialState.COMPLETE]
    df = nas.load_trials(config.storage, "r")
    assert df.set_index("number").loc[dead, "error"] == DIED.format(grace=4) + "; retried as trial 1"


def test_retries_of_a_dying_trial_are_bounded_across_resumes_and_reported(tmp_path):
    """A trial whose process dies again in its retry is not queued a third time (max_retry 1, held
    in its retry history across resumes); it counts for the budget, so the study still reaches it;
    each run and `nas status` say how many trials were lost to a dead process."""
    from nas.engine.budget import report_running
    from nas.store.study import budget_count
    from tests.cli_helpers import invoke

    study, config = _study_with_running_trials(tmp_path, trials=2)
    first = _start_and_kill(study, config)
    said = []
    report_running(study, config, log=said.append)  # a resume: failed, queued again as #1
    retry = study.ask()
    assert retry.number == 1 and study._storage.get_trial(retry._trial_id).system_attrs["retry_history"] == [first]
    study._storage.record_heartbeat(retry._trial_id)
    _age(config.storage, retry.number, 30)  # the retry's process dies too
    said.clear()
    report_running(study, config, log=said.append)  # the next resume
    assert re.fullmatch(r"trial #1 \(a1\): no heartbeat for 3[01]s \(over 4s: the run that owned it died\), failed; "
                        r"not queued again \(already retried 1 time\(s\)\)", said[0]), said
    assert said[-1].startswith("2 trial(s) lost to a dead process (killed by the OS, e.g. out of memory): "
                               "#0 (queued again as #1), #1 (not queued again)")
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.FAIL]  # nothing WAITING
    assert budget_count(study) == 1  # the chain counts once
    r = invoke("status", "--study", "r", "--storage", config.storage, cwd=tmp_path, check=True)
    assert "2 trial(s) lost to a dead process" in " ".join(r.stdout.split())
    r = invoke("resume", "--study", "r", "--storage", config.storage, cwd=tmp_path, check=True)
    assert budget_count(study) == 2 and study.get_trials()[-1].state == TrialState.COMPLETE
