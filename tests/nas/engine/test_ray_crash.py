"""The Ray backend's driver is SIGKILLed mid-search, then `nas resume` continues the same study.

Only the driver is killed, as the OOM killer would: the local Ray it started (raylet, agents, trial
workers) is left to die on its own. Every process of that Ray has the test's private ``RAY_TMPDIR``
in its environment or its log files open under it: that is how the test finds and kills the
leftovers itself.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

import nas
from tests.cli_helpers import NAS, default_stop_signals, write_space

pytest.importorskip("ray")  # the backend under test

pytestmark = pytest.mark.slow

TRIALS = 4


def _ray_pids(ray_tmp: str) -> list[int]:
    """Live processes of the Ray sessions under ``ray_tmp``: ``RAY_TMPDIR=ray_tmp`` in their environment,
    or a file open under it (Ray's agents overwrite their environment when they set their title)."""
    needle = f"RAY_TMPDIR={ray_tmp}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":  # dead, not yet reaped
                continue
            if needle in (entry / "environ").read_bytes().split(b"\0") or any(
                    os.readlink(fd).startswith(ray_tmp + "/") for fd in (entry / "fd").iterdir()):
                pids.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            pass
    return pids


def _kill_ray(ray_tmp: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (pids := _ray_pids(ray_tmp)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def _snapshot(url: str, study: str) -> dict[int, optuna.trial.FrozenTrial]:
    try:
        st = optuna.load_study(study_name=study, storage=url)
    except KeyError:  # the driver has not created the study yet
        return {}
    return {t.number: t for t in st.get_trials()}


@pytest.fixture
def ray_env():
    # a short path: Ray puts unix sockets under it (at most 107 characters)
    ray_tmp = tempfile.mkdtemp(prefix="nasray-", dir="/tmp")
    env = dict(os.environ, RAY_TMPDIR=ray_tmp, TMPDIR=ray_tmp, PYTHONUNBUFFERED="1", COLUMNS="200")
    try:
        yield env
    finally:
        _kill_ray(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _start_driver(tmp_path, env, log, url) -> subprocess.Popen:
    """A 2-worker Ray search of TRIALS trials (study "d" at ``url``) writing to ``log``."""
    space = write_space(tmp_path, steps=200)
    with open(log, "w") as out:
        return subprocess.Popen([*NAS, "search", "--space", str(space), "--study", "d", "--storage", url,
                                 "--trials", str(TRIALS), "--backend", "ray", "--workers", "2", "--heartbeat", "1",
                                 "--sampler", "random", "--no-early-stop"],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=default_stop_signals)


def _wait_in_flight(driver, url, log, complete: bool) -> None:
    """Until a trial is RUNNING on a worker (and, with ``complete``, another one is COMPLETE)."""
    deadline = time.monotonic() + 300
    while True:
        assert driver.poll() is None, f"driver exited early:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no COMPLETE and RUNNING trials together:\n{log.read_text()}"
        trials = _snapshot(url, "d").values()
        if ((any(t.state == TrialState.COMPLETE for t in trials) or not complete)
                and any(t.state == TrialState.RUNNING and "arch_id" in t.user_attrs for t in trials)):
            return
        time.sleep(0.2)


def test_driver_sigterm_records_and_requeues_its_trials(tmp_path, ray_env):
    """SIGTERM (a scheduler's or a container's stop) while Ray Tune runs: as Ctrl-C, the trials in
    flight are recorded and queued again and the resume command printed; exit code 143."""
    url = f"sqlite:///{tmp_path}/d.db"
    log = tmp_path / "driver.log"
    driver = _start_driver(tmp_path, ray_env, log, url)
    try:
        _wait_in_flight(driver, url, log, complete=False)
        driver.send_signal(signal.SIGTERM)
        driver.wait(timeout=120)
    finally:
        driver.kill()
        driver.wait()
    said = log.read_text()
    assert driver.returncode == 143, said
    assert f"terminated by SIGTERM: 0/{TRIALS} trials finished and saved. Resume with:\n  nas resume --study d" in said
    trials = _snapshot(url, "d").values()
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert stopped and not [t for t in trials if t.state == TrialState.RUNNING], [(t.number, t.state) for t in trials]
    assert {t.user_attrs["error"] for t in stopped} == {"interrupted by SIGTERM; queued again for the next run"}
    queued = sorted(t.user_attrs["retry_of"] for t in trials if t.state == TrialState.WAITING)
    assert queued == sorted(t.number for t in stopped)


def test_driver_sigkill_then_resume_continues_the_study(tmp_path, ray_env):
    env = ray_env
    url = f"sqlite:///{tmp_path}/d.db"
    log = tmp_path / "driver.log"
    driver = _start_driver(tmp_path, env, log, url)
    try:
        _wait_in_flight(driver, url, log, complete=True)
        driver.send_signal(signal.SIGKILL)  # the driver only: its Ray is orphaned
        driver.wait()
    finally:
        driver.kill()
        driver.wait()

    before = _snapshot(url, "d")  # nobody writes the study now
    killed = [t for t in before.values() if t.state == TrialState.RUNNING]
    done = [t for t in before.values() if t.state == TrialState.COMPLETE]
    assert killed and done, [(t.number, t.state.name) for t in before.values()]

    # the leftovers of the dead driver's Ray may still be around while the next driver runs
    with open(log, "w") as out:  # a file, not a pipe: no Ray process can hold the test up
        r = subprocess.run([*NAS, "resume", "--study", "d", "--storage", url], check=False, cwd=tmp_path,
                           env=env, stdout=out, stderr=subprocess.STDOUT, timeout=400)
    said = log.read_text()
    assert r.returncode == 0, said
    for t in killed:  # each told apart from a live run's trial by its stale heartbeat
        assert re.search(rf"trial #{t.number}( \(\w+\))?: no heartbeat for \d+s \(over \d+s: the run that owned it "
                         r"died\), failed; queued again as #\d+", said), said

    df = nas.load_trials(url, "d")
    assert set(df.state) <= {"COMPLETE", "FAIL"}, df[["number", "state", "error"]]
    from nas.store.study import budget_count, load_study

    st, _ = load_study(url, "d")
    assert budget_count(st) == TRIALS and (df.state == "COMPLETE").sum() == TRIALS
    after = {t.number: t for t in st.get_trials()}
    for t in done:  # finished before the kill: untouched
        same = after[t.number]
        assert (same.state, same.values, same.user_attrs, same.datetime_complete) == \
               (t.state, t.values, t.user_attrs, t.datetime_complete)
    retries = []
    for t in killed:  # failed as stale and run again once, with the same architecture
        row = df[df.number == t.number].iloc[0]
        assert row.state == "FAIL" and "heartbeat" in row.error, row.error
        retry = df[df.number == row.retried_as].iloc[0]
        assert retry.state == "COMPLETE" and pd.isna(retry.reused_from)
        if "arch_id" in t.user_attrs:
            assert retry.arch_id == t.user_attrs["arch_id"] and after[retry.number].params == t.params
            assert f"trial #{t.number} ({t.user_attrs['arch_id']}): no heartbeat" in said
        assert f"queued again as #{retry.number}" in said
        retries.append(retry.number)
    assert len(set(retries)) == len(killed)
    assert set(df[df.state == "FAIL"].number) == {t.number for t in killed}  # nothing else failed
    trained = df[(df.state == "COMPLETE") & df.reused_from.isna()]
    assert trained.arch_id.is_unique, "an architecture was trained twice"
