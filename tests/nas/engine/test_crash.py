"""Crash safety: SIGKILL mid-trial then `nas resume`; Ctrl-C, SIGTERM, SIGHUP; failures inside a trial."""

import os
import re
import signal
import subprocess
import time

import optuna
import pytest
from optuna.trial import TrialState

import nas
from tests.cli_helpers import NAS, default_stop_signals, invoke, run_nas, write_space

pytestmark = pytest.mark.slow


def _start(space, url, study, cwd, trials=3):
    # one torch thread: on a loaded machine two threads per process thrash (10x slower steps)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.Popen([*NAS, "search", "--space", str(space), "--study", study, "--storage", url,
                             "--trials", str(trials), "--heartbeat", "1", "--sampler", "random"],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_stop_signals)


def _wait_running(url, study, min_complete, proc, timeout=240):
    """Block until a trial is RUNNING and at least ``min_complete`` trials are COMPLETE."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            st = optuna.load_study(study_name=study, storage=url)
            trials = st.get_trials(deepcopy=False)
            running = [t for t in trials if t.state == TrialState.RUNNING and "arch_id" in t.user_attrs]
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            if running and len(done) >= min_complete:
                return running[0].number, {t.number for t in done}
        except KeyError:  # the study is not created yet
            pass
        time.sleep(0.2)
    proc.kill()  # never leave the search running behind a failed test
    raise AssertionError(f"no running trial appeared: {proc.communicate()}")


def test_sigkill_then_resume(tmp_path):
    space = write_space(tmp_path, steps=400)
    url = f"sqlite:///{tmp_path}/k.db"
    proc = _start(space, url, "k", tmp_path, trials=3)
    killed, done_before = _wait_running(url, "k", 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = run_nas("resume", "--study", "k", "--storage", url, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"trial #{killed} " in r.stderr and "the run that owned it died), failed; queued again as" in r.stderr
    assert "1 trial(s) lost to a dead process (killed by the OS, e.g. out of memory)" in r.stderr
    df = nas.load_trials(url, "k")
    assert (df.state == "RUNNING").sum() == 0
    assert done_before <= set(df[df.state == "COMPLETE"].number)  # nothing finished was lost
    row = df[df.number == killed].iloc[0]
    assert row.state == "FAIL" and "heartbeat" in row.error
    assert row.error.startswith("the process running it died (killed by the OS, e.g. out of memory")
    retry = df[df.number == row.retried_as].iloc[0]  # the interrupted trial was evaluated again
    assert retry.state == "COMPLETE" and retry.arch_id == row.arch_id
    from nas.store.study import budget_count, load_study

    st, cfg = load_study(url, "k")
    assert budget_count(st) == 3 and (df.state == "COMPLETE").sum() == 3


@pytest.mark.parametrize("sig,said,resume", [(signal.SIGINT, "interrupted", True),
                                             (signal.SIGTERM, "terminated by SIGTERM", True),
                                             (signal.SIGHUP, "terminated by SIGHUP", False)],
                         ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_stop_signal_stops_cleanly_and_resume_reruns(tmp_path, sig, said, resume):
    """Ctrl-C, SIGTERM (kill, timeout, schedulers) and SIGHUP (a closed terminal) stop a search alike:
    the running trial is recorded FAIL and queued again, the resume command printed, exit 128 + signal."""
    space = write_space(tmp_path, steps=400)
    url = f"sqlite:///{tmp_path}/c.db"
    proc = _start(space, url, "c", tmp_path, trials=2)
    interrupted, _ = _wait_running(url, "c", 0, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    hint = f"Resume with:\n  nas resume --study c --storage {url}\n"
    assert re.search(rf"{said}: [01]/2 trials finished and saved. {re.escape(hint)}", err), err
    df = nas.load_trials(url, "c")
    row = df[df.number == interrupted].iloc[0]
    name = "Ctrl-C" if sig == signal.SIGINT else signal.Signals(sig).name
    assert row.state == "FAIL" and row.error == f"interrupted by {name}; queued again for the next run"
    assert (df.state == "RUNNING").sum() == 0
    queued = optuna.load_study(study_name="c", storage=url).get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs["retry_of"] for t in queued] == [interrupted]
    if not resume:
        return
    r = run_nas("resume", "--study", "c", "--storage", url, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    df = nas.load_trials(url, "c")
    retry = df[df.number == row.retried_as].iloc[0]
    assert retry.state == "COMPLETE" and retry.arch_id == row.arch_id
    assert (df.state == "COMPLETE").sum() == 2


def test_failures_inside_trials_are_recorded_and_search_goes_on(tmp_path, monkeypatch):
    import torch

    import nas.engine.objective as objective
    from evaluators.errors import NonFiniteLoss

    real = objective.evaluate
    calls = {"n": 0}

    def flaky(arch, settings, **kw):
        calls["n"] += 1
        kind = calls["n"] % 4
        if kind == 1:
            raise RuntimeError("shape mismatch in block 2")
        if kind == 2:
            raise NonFiniteLoss("training loss became nan at step 3")
        if kind == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(arch, settings, **kw)

    monkeypatch.setattr(objective, "evaluate", flaky)
    space = write_space(tmp_path, steps=2)
    url = f"sqlite:///{tmp_path}/f.db"
    r = invoke("search", "--space", space, "--study", "f", "--storage", url, "--trials", 8, "--sampler", "random",
               cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    df = nas.load_trials(url, "f")
    fails = df[df.state == "FAIL"]
    errors = " | ".join(fails.error)
    assert "RuntimeError: shape mismatch in block 2" in errors
    assert "nan at step 3" in errors
    assert "out of memory" in errors
    assert (df.state == "COMPLETE").sum() >= 1 and len(df) >= 8


TOO_LARGE_SPACE = """
name: big
task: {name: mqar, params: {vocab_size: 128, seq_len: 64, num_kv_pairs: 2, n_train: 128, n_test: 32}}
objectives: {accuracy: maximize}
trials: 4
train: {steps: 1, batch_size: 64, lr: 0.01}
latency: {repeats: 1, warmup: 0, max_seconds: 0.05}
arch:
  stages:
    - depth: [1]
      dim: [8, 128]
      mixer: {choices: {softmax: {heads: [1]}}}
      ffn: {type: [mlp], ratio: 2}
"""


def test_a_trial_too_large_for_this_machine_fails_with_the_reason_and_nothing_is_built(tmp_path, monkeypatch):
    """With memory for the width-8 model's training and not the width-128 one's (the space loads:
    some model fits), each width-128 candidate is a FAIL trial saying why, and is never built."""
    from evaluators import evaluation, fit, model_memory
    from tests.cli_helpers import load_space_text

    space = load_space_text(TOO_LARGE_SPACE)
    small, big = _widths(space, (8, 128))
    need = {a.stages[0].dim: model_memory.proxy_need(a, space.io, 64, eval_batch=32).bytes for a in (small, big)}
    available = int(need[128] / model_memory.PLANNED / 2)
    assert need[8] < model_memory.PLANNED * available  # the small one fits, the large one does not
    monkeypatch.setenv(fit.MEMORY_ENV, str(available))
    built = []
    real_build = evaluation.build_model
    monkeypatch.setattr(evaluation, "build_model", lambda arch, io: built.append(arch.stages[0].dim) or real_build(arch, io))
    p = write_space(tmp_path, text=TOO_LARGE_SPACE)
    r = invoke("search", "--space", p, "--study", "b", "--trials", 4, "--sampler", "random", "--seed", 0, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    df = nas.load_trials(f"sqlite:///{tmp_path}/results/b.db", "b")
    assert set(built) == {8}
    wide = df[df.arch_json.str.contains('"dim":128')]
    assert len(wide) and set(wide.state) == {"FAIL"}
    assert all("too large for this machine (training it at batch 64 needs about" in e for e in wide.error)
    assert set(df[~df.index.isin(wide.index)].state) == {"COMPLETE"}


def _widths(space, dims):
    """The space's one architecture at each width in ``dims``."""
    import optuna

    import search_spaces

    for d in dims:
        study = optuna.create_study()
        study.enqueue_trial({"s0.dim": d})
        yield search_spaces.sample(space, study.ask())


def test_sqlite_studies_use_a_write_ahead_log(tmp_path):
    """Commits do not wait for fsync (WAL, synchronous=NORMAL); what is committed is visible to
    another process at once and survives the writer being killed (test_sigkill_then_resume)."""
    from sqlalchemy import text

    from nas.store.storage import open_storage

    url = f"sqlite:///{tmp_path}/w.db"
    storage = open_storage(url, create=True)
    with storage.engine.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert c.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
    study = optuna.create_study(storage=storage, study_name="w")
    study.enqueue_trial({"x": 1})
    trial = study.ask()
    trial.set_user_attr("seen", "yes")
    out = subprocess.run([*NAS[:1], "-c", "import optuna, sys; t = optuna.load_study(study_name='w', storage=sys.argv[1])"
                          ".get_trials()[0]; print(t.user_attrs['seen'], t.state.name)", url],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["yes", "RUNNING"]


def test_the_fallout_of_a_ctrl_c_is_not_logged_but_other_errors_are(capsys):
    """A Ctrl-C that lands inside a database read makes SQLAlchemy log "Error closing cursor" with a
    traceback; the CLI leaves that out (it reports the interrupt itself) and shows other errors."""
    import logging

    from nas.engine.logs import quiet_interrupt_fallout

    quiet_interrupt_fallout()
    quiet_interrupt_fallout()  # idempotent: one handler
    log = logging.getLogger("sqlalchemy.pool.impl.QueuePool")
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("Cannot operate on a closed database.")  # noqa: B904 (as the driver does)
    except RuntimeError:
        log.error("Error closing cursor", exc_info=True)
    assert capsys.readouterr().err == ""
    try:
        raise RuntimeError("disk I/O error")
    except RuntimeError:
        log.error("Error closing cursor", exc_info=True)
    err = capsys.readouterr().err
    assert err.count("Error closing cursor") == 1 and "RuntimeError: disk I/O error" in err
