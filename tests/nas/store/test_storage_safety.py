"""Storage edge cases: an in-memory URL, a damaged, read-only or locked database, a study whose
creation was cut short, odd study names and seeds. Each ends in one line and exit code 2 (nothing
written), or works; none prints a traceback or strands a study."""

import ctypes
import os
import shutil
import sqlite3
import subprocess

import optuna
import pytest

import nas
from tests.cli_helpers import NAS, assert_one_line_error, invoke, write_space

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A study 'm' with one finished trial (1 training step) in made.db, and its space file."""
    d = tmp_path_factory.mktemp("made")
    space = write_space(d, steps=1)
    invoke("search", "--space", space, "--study", "m", "--storage", f"sqlite:///{d}/made.db", "--trials", 1,
           "--sampler", "random", cwd=d, check=True)
    with sqlite3.connect(d / "made.db") as conn:  # everything into the main file, so a copy of it is whole
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return d


def _copy(made, tmp_path, name="s.db"):
    shutil.copy(made / "made.db", tmp_path / name)
    return tmp_path / name, f"sqlite:///{tmp_path / name}"


def _files(d):
    return {p.relative_to(d) for p in d.rglob("*")}


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite+pysqlite:///:memory:",
                                 "sqlite:///file::memory:?uri=true", "sqlite:///file:x?mode=memory&uri=true"])
def test_an_in_memory_database_is_refused_before_anything_runs(made, tmp_path, url):
    before = _files(tmp_path)
    r = invoke("search", "--space", made / "space.yaml", "--study", "x", "--storage", url, cwd=tmp_path)
    assert_one_line_error(r, url, "in-memory", "keeps nothing")
    assert_one_line_error(invoke("status", "--study", "x", "--storage", url, cwd=tmp_path), "in-memory")
    assert _files(tmp_path) == before


def _commands(url, tmp_path):
    """Every command that reads or writes a study, pointed at ``url``."""
    s = ("--study", "m", "--storage", url)
    return [("search", "--space", tmp_path / "space.yaml", *s), ("resume", *s), ("status", *s), ("pareto", *s),
            ("export", *s, "--out", tmp_path / "x.csv"), ("show", *s, "--trial", 0),
            ("plot", *s, "--out", tmp_path / "x.html"), ("report", *s, "--out", tmp_path / "rep"),
            ("compare", "--study", "m", "--study", "n", "--storage", url), ("delete", *s, "--yes")]


def test_a_damaged_database_is_one_line_for_every_command(made, tmp_path):
    write_space(tmp_path, steps=1)
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(8192))  # not a database at all
    torn, torn_url = _copy(made, tmp_path, "torn.db")
    with open(torn, "r+b") as f:  # a real study with pages overwritten past the header page
        f.seek(4096)
        f.write(os.urandom(torn.stat().st_size - 4096))
    for path, cause in ((junk, "file is not a database"), (torn, "malformed")):
        for args in _commands(f"sqlite:///{path}", tmp_path):
            r = invoke(*args, cwd=tmp_path)
            assert_one_line_error(r, f"sqlite:///{path}", "damaged", cause)
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "rep").exists()


def test_a_read_only_uri_is_read_but_never_written(made, tmp_path):
    path, _ = _copy(made, tmp_path)
    url = f"sqlite:///file:{path}?mode=ro&uri=true"
    assert invoke("status", "--study", "m", "--storage", url, cwd=tmp_path).returncode == 0
    assert invoke("pareto", "--study", "m", "--storage", url, "--format", "csv", cwd=tmp_path).returncode == 0
    write_space(tmp_path, steps=1)
    for args in (("resume", "--study", "m", "--storage", url, "--trials", 2),
                 ("search", "--space", tmp_path / "space.yaml", "--study", "m", "--storage", url, "--trials", 2),
                 ("delete", "--study", "m", "--storage", url, "--yes")):
        assert_one_line_error(invoke(*args, cwd=tmp_path), "read-only file")
    assert len(nas.load_trials(f"sqlite:///{path}", "m")) == 1


def _without_root_override():
    """preexec_fn: as root, drop the capabilities that let root write a file whose mode forbids it
    (from the bounding set, so the exec'd interpreter never has them); a no-op for other users."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            os._exit(77)


def test_a_read_only_file_or_folder_is_read_but_never_written(made, tmp_path):
    """Modes that forbid writing (as root too: the child runs without CAP_DAC_OVERRIDE)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    path, url = _copy(made, ro)
    write_space(tmp_path, steps=1)
    env = dict(os.environ, COLUMNS="200", OMP_NUM_THREADS="1")

    def nas_cli(*args):
        r = subprocess.run([*NAS, *map(str, args)], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300, preexec_fn=_without_root_override)
        if r.returncode == 77:
            pytest.skip("running as root and cannot drop CAP_DAC_OVERRIDE (no CAP_SETPCAP): root writes any file")
        return r

    os.chmod(path, 0o444)
    try:
        assert nas_cli("status", "--study", "m", "--storage", url).returncode == 0
        assert_one_line_error(nas_cli("resume", "--study", "m", "--storage", url, "--trials", 2),
                              url, "read-only file", str(path))
        os.chmod(ro, 0o555)
        assert_one_line_error(nas_cli("search", "--space", tmp_path / "space.yaml", "--study", "m", "--storage", url,
                                      "--trials", 2), url, "read-only file", str(path))
        new = f"sqlite:///{ro}/new.db"
        assert_one_line_error(nas_cli("search", "--space", tmp_path / "space.yaml", "--study", "n", "--storage", new),
                              new, "read-only folder")
        r = nas_cli("status", "--study", "m", "--storage", url)  # SQLite may need to write its -shm file
        assert r.returncode == 0 or "read-only file" in assert_one_line_error(r)
    finally:
        os.chmod(ro, 0o755)
    assert not (ro / "new.db").exists()
    assert len(nas.load_trials(url, "m")) == 1


@pytest.mark.parametrize("exclusive", [False, True], ids=["write-lock", "exclusive-lock"])
def test_a_locked_database_is_one_line(made, tmp_path, monkeypatch, exclusive):
    """Another process holds the write lock (an exclusive one also keeps readers out)."""
    path, url = _copy(made, tmp_path)
    monkeypatch.setenv("MIXER_NAS_SQLITE_TIMEOUT", "0.2")
    other = sqlite3.connect(path, isolation_level=None)
    if exclusive:
        other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE version_info SET schema_version = schema_version")
    try:
        assert_one_line_error(invoke("resume", "--study", "m", "--storage", url, "--trials", 2, cwd=tmp_path),
                              url, "locked by another process")
        r = invoke("status", "--study", "m", "--storage", url, cwd=tmp_path)
        if exclusive:
            assert_one_line_error(r, "locked by another process")
        else:  # the write-ahead log lets readers in
            assert r.returncode == 0, r.stderr
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert invoke("status", "--study", "m", "--storage", url, cwd=tmp_path).returncode == 0


def test_a_half_created_study_is_finished_by_its_search_or_deleted(made, tmp_path):
    """A kill between creating the study and storing its config leaves a study without config."""
    space = write_space(tmp_path, steps=1)
    url = f"sqlite:///{tmp_path}/h.db"
    optuna.create_study(study_name="h", storage=url, directions=["maximize", "minimize"])
    line = assert_one_line_error(invoke("resume", "--study", "h", "--storage", url, cwd=tmp_path), "no stored config")
    assert f"nas delete --study h --storage {url}" in line and "`nas search` again" in line
    r = invoke("search", "--space", space, "--study", "h", "--storage", url, "--trials", 1, "--sampler", "random",
               cwd=tmp_path)
    assert r.returncode == 0, r.stderr  # the same search finishes creating it
    assert len(nas.load_trials(url, "h")) == 1 and invoke("status", "--study", "h", "--storage", url,
                                                          cwd=tmp_path).returncode == 0
    # one that cannot be this search's (other objectives) is refused, naming the fix, and deleted
    optuna.create_study(study_name="g", storage=url, directions=["minimize"])
    args = ("search", "--space", space, "--study", "g", "--storage", url, "--trials", 1, "--sampler", "random")
    assert_one_line_error(invoke(*args, cwd=tmp_path), "no stored config", f"nas delete --study g --storage {url}")
    r = invoke("delete", "--study", "g", "--storage", url, cwd=tmp_path)  # no answer: nothing deleted
    assert r.returncode == 1 and "nothing deleted" in r.stderr
    assert "g" in optuna.get_all_study_names(url)
    r = invoke("delete", "--study", "g", "--storage", url, "--yes", cwd=tmp_path)
    assert r.returncode == 0 and "deleted study 'g' (0 trials, no stored config)" in r.stderr, r.stderr
    assert optuna.get_all_study_names(url) == ["h"]
    assert invoke(*args, cwd=tmp_path).returncode == 0


def test_delete_asks_and_refuses_while_a_search_runs(made, tmp_path):
    path, url = _copy(made, tmp_path)
    from typer.testing import CliRunner

    from nas.cli import app

    r = CliRunner().invoke(app, ["delete", "--study", "m", "--storage", url], input="n\n")
    assert r.exit_code == 1 and "delete study 'm'" in r.stderr and "(1 trials (1 complete))" in r.stderr
    study = optuna.load_study(study_name="m", storage=url)
    trial = study.ask()  # a live search's trial: its heartbeat is fresh
    optuna.storages.RDBStorage(url, heartbeat_interval=5).record_heartbeat(trial._trial_id)
    assert_one_line_error(invoke("delete", "--study", "m", "--storage", url, "--yes", cwd=tmp_path),
                          "#1 RUNNING with a live heartbeat")
    r = CliRunner().invoke(app, ["delete", "--study", "m", "--storage", url], input="y\n")
    assert r.exit_code == 2 and "live heartbeat" in r.stderr
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    r = CliRunner().invoke(app, ["delete", "--study", "m", "--storage", url], input="y\n")
    assert r.exit_code == 0 and optuna.get_all_study_names(url) == []
    assert_one_line_error(invoke("status", "--study", "m", "--storage", url, cwd=tmp_path), "no study 'm'")


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", "a\\b", "x" * 129, "tab\there", ""])
def test_study_names_are_checked(made, tmp_path, name):
    before = _files(tmp_path)
    r = invoke("search", "--space", made / "space.yaml", "--study", name, "--trials", 1, cwd=tmp_path)
    assert_one_line_error(r, "--study", "not a valid study name")
    assert _files(tmp_path) == before and not (tmp_path.parent / "x.db").exists()
    assert_one_line_error(invoke("status", "--study", name, cwd=tmp_path), "not a valid study name")


def test_a_study_name_with_a_slash_is_fine_in_a_storage_url(made, tmp_path):
    _, url = _copy(made, tmp_path)
    assert_one_line_error(invoke("status", "--study", "a/b", "--storage", url, cwd=tmp_path), "no study 'a/b'")


@pytest.mark.parametrize("seed,trials", [(-1, 1), (2**32 - 1, 1), (2**32 - 3, 3), (2**40, 1)])
def test_seeds_out_of_range_are_one_line(made, tmp_path, seed, trials):
    before = _files(tmp_path)
    r = invoke("search", "--space", made / "space.yaml", "--study", "x", "--seed", seed, "--trials", trials,
               cwd=tmp_path)
    assert_one_line_error(r, "--seed", str(seed), f"[0, {2**32 - 1 - trials}]")
    assert _files(tmp_path) == before


def test_the_largest_seed_runs_and_a_study_with_any_seed_stays_readable(made, tmp_path):
    space = made / "space.yaml"
    url = f"sqlite:///{tmp_path}/big.db"
    r = invoke("search", "--space", space, "--study", "big", "--storage", url, "--seed", 2**32 - 2, "--trials", 1,
               "--sampler", "random", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # a study an earlier version made with the top seed: its sampler is re-seeded past 2**32 - 1 on load
    from nas.engine.config import SearchConfig
    from nas.store.study import CONFIG_ATTR

    study = optuna.load_study(study_name="big", storage=url)
    config = SearchConfig.from_json(study.user_attrs[CONFIG_ATTR])
    config.seed = 2**32 - 1
    study.set_user_attr(CONFIG_ATTR, config.to_json())
    for args in (("status",), ("show", "--trial", 0), ("resume", "--trials", 2)):
        r = invoke(*args, "--study", "big", "--storage", url, cwd=tmp_path)
        assert r.returncode == 0, (args, r.stderr)
    assert len(nas.load_trials(url, "big")) == 2
