"""Careless input that used to be taken silently or end in a crash: a budget below the trials
already finished, `nas studies` pointed at a file that is not a study database, a results folder
made immutable while a search writes to it. Each ends in one line and exit code 2, nothing
changed, nothing lost."""

import os
import shutil
import sqlite3
import subprocess

import pytest

import nas
from tests.cli_helpers import NAS, assert_one_line_error, default_stop_signals, invoke, run_nas, write_space

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_done(tmp_path_factory):
    """A study with 2 finished trials of a budget of 2: (folder, storage URL)."""
    d = tmp_path_factory.mktemp("careless")
    write_space(d, steps=1)
    url = f"sqlite:///{d}/s.db"
    invoke("search", "--space", "space.yaml", "--study", "s", "--storage", url, "--trials", 2, cwd=d, check=True)
    return d, url


def test_a_new_budget_below_the_finished_trials_is_refused(two_done):
    d, url = two_done
    for cmd in (["resume", "--study", "s"], ["search", "--space", "space.yaml", "--study", "s"]):
        r = invoke(*cmd, "--storage", url, "--trials", 1, cwd=d)
        assert_one_line_error(r, "--trials 1: study 's' already has 2 finished trials", "give --trials 2 or more")
    df = nas.load_trials(url, "s")
    assert df.attrs["config"]["trials"] == 2 and len(df) == 2  # the stored budget is unchanged, nothing ran


@pytest.mark.parametrize("make,fragment", [
    (lambda p: p.write_bytes(b""), "is empty, not a study database"),
    (lambda p: sqlite3.connect(p).execute("CREATE TABLE notes (text)").connection.commit(),
     "is not a study database: it has no Optuna tables"),
], ids=["empty", "another-database"])
def test_studies_on_a_file_that_is_not_a_study_database_leaves_it_as_it_was(tmp_path, monkeypatch, make, fragment):
    p = tmp_path / "x.db"
    make(p)
    before = p.read_bytes()
    assert_one_line_error(invoke("studies", "--storage", f"sqlite:///{p}", cwd=tmp_path), str(p), fragment)
    monkeypatch.setenv("NAS_STORAGE", f"sqlite:///{p}")
    assert_one_line_error(invoke("studies", cwd=tmp_path), str(p), fragment)
    assert p.read_bytes() == before and sorted(q.name for q in tmp_path.iterdir()) == ["x.db"]


def _chattr_works(tmp_path) -> bool:
    if shutil.which("chattr") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    ok = subprocess.run(["chattr", "+i", probe], capture_output=True).returncode == 0
    subprocess.run(["chattr", "-i", probe], capture_output=True)
    probe.rmdir()
    return ok


def test_an_immutable_results_folder_ends_the_search_in_one_line_and_resume_completes(tmp_path):
    """Found at the next write as SQLite's disk I/O error: one line saying what to do, exit code 2.
    Without care the process then died of SIGBUS (exit code 135) while SQLite closed its
    connections, writing its memory-mapped -shm file. Needs chattr (root, on ext4 or alike)."""
    if not _chattr_works(tmp_path):
        pytest.skip("chattr +i is not available here (needs root and a file system with attributes)")
    write_space(tmp_path, steps=5)
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    proc = subprocess.Popen([*NAS, "search", "--space", "space.yaml", "--study", "imm", "--trials", "40", "--heartbeat", "1"], cwd=tmp_path,
                            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            preexec_fn=default_stop_signals)
    lines = []
    try:
        for line in proc.stderr:  # the event: the first trial is told, so the study holds a finished trial
            lines.append(line)
            if line.startswith("[1/40]"):
                break
        assert proc.poll() is None, "".join(lines)
        subprocess.run(["chattr", "-R", "+i", tmp_path / "results"], check=True)
        lines.extend(proc.stderr)
        code = proc.wait(timeout=300)
    finally:
        subprocess.run(["chattr", "-R", "-i", tmp_path / "results"], capture_output=True)
        if proc.poll() is None:
            proc.kill()
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 2, (code, "".join(lines[-5:]))
    assert len(errors) == 1 and "disk I/O error" in errors[0] and "`nas resume` goes on" in errors[0], errors
    done = nas.load_trials(f"sqlite:///{tmp_path}/results/imm.db", "imm").attrs["finished"]
    assert done >= 1  # the finished trials were kept
    r = run_nas("resume", "--study", "imm", "--trials", done + 1, cwd=tmp_path, check=True)
    assert f"study imm: {done + 1}/{done + 1} trials finished" in r.stderr
