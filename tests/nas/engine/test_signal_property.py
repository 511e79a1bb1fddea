"""Property: a search stopped at a random moment by SIGTERM, SIGINT or SIGKILL and then resumed
ends with no trial RUNNING or queued, no finished trial lost or changed, and exactly its budget.

Each example is two CLI processes (the stopped search and its recovery), some 10-20 s on 2 cores,
so the default run tries EXAMPLES = 4 (moments: during start-up, around the study's creation, in a
trial, between trials); set MIXER_NAS_SIGNAL_EXAMPLES=200 for a long run.
"""

import os
import signal
import subprocess
import threading
import time

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState

from tests.cli_helpers import NAS, default_stop_signals, run_nas, write_space

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("MIXER_NAS_SIGNAL_EXAMPLES", "4"))
TRIALS = 2
# stderr lines that mark moments of a search: start-up (imports), the study exists, a trial runs, one ended
MARKS = {"spawn": None, "study": "study e2e-sig in", "trial": "[start]", "ended": f"[1/{TRIALS}]"}


def _stop_at(proc, mark, delay, sig) -> str:
    """Read ``proc``'s stderr; ``delay`` seconds after the first line holding ``mark`` (after the
    start for None) send ``sig``, unless the search has ended by then. Returns all of stderr."""
    lines, seen = [], threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if mark is not None and mark in line:
                seen.set()
        seen.set()  # ended before the mark: nothing to wait for

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if mark is not None:
        seen.wait(timeout=300)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.wait(timeout=300)
    reader.join(timeout=30)
    return "".join(lines)


def _finished(url):
    try:
        trials = optuna.load_study(study_name="e2e-sig", storage=url).get_trials()
    except KeyError:  # killed before the study was made
        return {}
    return {t.number: (t.values, t.datetime_complete) for t in trials if t.state == TrialState.COMPLETE}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(sig=st.sampled_from([signal.SIGTERM, signal.SIGINT, signal.SIGKILL]),
       mark=st.sampled_from(list(MARKS)), delay=st.floats(0.0, 1.5))
def test_a_search_stopped_at_any_moment_resumes_to_its_exact_budget(tmp_path_factory, sig, mark, delay):
    d = tmp_path_factory.mktemp("sig")
    space = write_space(d, steps=30)
    url = f"sqlite:///{d}/s.db"
    search = ("search", "--space", space, "--study", "e2e-sig", "--storage", url, "--trials", TRIALS,
              "--heartbeat", "1", "--sampler", "random")
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", COLUMNS="200")
    proc = subprocess.Popen([*NAS, *map(str, search)], cwd=d, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_stop_signals)
    err = _stop_at(proc, MARKS[mark], delay, sig)

    done = f"study e2e-sig: {TRIALS}/{TRIALS} trials finished ("  # the command's last line
    if "study e2e-sig in" in err and sig != signal.SIGKILL and done not in err:  # stopped inside the command
        assert proc.returncode in (0, 128 + sig), (proc.returncode, err)
        assert "Traceback" not in err, err
        if proc.returncode:
            assert f"Resume with:\n  nas resume --study e2e-sig --storage {url}\n" in err, err
    elif done in err:  # it had ended; the signal came on the way out, or not at all
        assert proc.returncode in (0, 128 + sig, -sig) and "Traceback" not in err, (proc.returncode, err)
    before = _finished(url)

    r = run_nas("resume", "--study", "e2e-sig", "--storage", url, cwd=d, timeout=600)
    if r.returncode == 2 and ("no study" in r.stderr or "no stored config" in r.stderr):
        r = run_nas(*search, cwd=d, timeout=600)  # stopped before the study was whole: the same command again
    assert r.returncode == 0, (sig, mark, delay, err, r.stderr)

    from nas.store.study import budget_count, load_study

    study, _ = load_study(url, "e2e-sig")
    trials = study.get_trials()
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)], r.stderr
    assert budget_count(study) == TRIALS
    assert sum(t.state == TrialState.COMPLETE for t in trials) == TRIALS, [(t.number, t.state) for t in trials]
    after = _finished(url)
    assert {n: after.get(n) for n in before} == before  # nothing finished was lost or changed
    for t in trials:  # a trial stopped midway was run again, once
        if t.state == TrialState.FAIL:
            retries = [u for u in trials if u.user_attrs.get("retry_of") == t.number
                       or t.number in u.system_attrs.get("retry_history", [])]
            assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE, t.user_attrs
