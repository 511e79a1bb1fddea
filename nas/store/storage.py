"""The one door to a study database: open an Optuna storage from its URL, and find a study in it.

Every command, the Python API, the catalog (`nas studies`), the latency tables and the benchmarks
open a storage through :func:`open_storage` and pass the object on; nothing else constructs an
``RDBStorage`` or a SQLAlchemy engine (``tests/test_layering.py`` checks). Opening one checks the
URL (its form, its scheme, SQLite's file), that the database driver is installed
(:mod:`nas.store.drivers`), turns a database error into one line (:mod:`nas.store.problems`), and
sets SQLite's lock timeout and write-ahead log and the heartbeat settings. :func:`require_study`
is the one check that a study exists, with the one message that says which studies are there.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Optional

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback

from nas.errors import UserError
from nas.store.drivers import missing_driver
from nas.store.optuna_access import set_heartbeat
from nas.store.problems import storage_problem
from nas.store.study_lock import lock_file, sqlite_file
from search_spaces.failures import first_line

__all__ = ["SQLITE_TIMEOUT_ENV", "check_can_make", "check_writable", "checked_url", "find_study", "holds_studies",
           "open_storage", "require_study", "use_heartbeat"]

SQLITE_TIMEOUT_ENV = "MIXER_NAS_SQLITE_TIMEOUT"  # seconds a command waits for a locked SQLite database [60]
BAD_URL = "expected e.g. sqlite:///results/demo.db or postgresql://user@host/db"


def _sqlite_path(url: str) -> Optional[Path]:
    """The file of an SQLite URL; None for other databases. UserError for an in-memory one (a
    search there would train every trial and keep none) and for a URL SQLAlchemy cannot parse."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(f"bad storage URL {url!r}: {BAD_URL}") from None
    if parsed.get_backend_name() != "sqlite":
        return None
    path = sqlite_file(parsed)
    if path is None:
        raise UserError(f"storage {url}: an in-memory SQLite database keeps nothing after the command ends; "
                        "use a file, e.g. sqlite:///results/demo.db")
    return path


def _sqlite_timeout() -> float:
    raw = os.environ.get(SQLITE_TIMEOUT_ENV, "60")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise UserError(f"{SQLITE_TIMEOUT_ENV}={raw!r}: expected a number of seconds >= 0")
    return value


def _sqlite_wal(storage: RDBStorage) -> None:
    """SQLite studies are journaled with a write-ahead log and ``synchronous=NORMAL``: a commit no
    longer waits for an fsync (Optuna commits every attribute it writes, some 25 per trial), and
    readers (``nas pareto``, the dashboard) do not block the writer. A killed process loses no
    committed trial; a power cut or OS crash may lose the last few commits."""
    from sqlalchemy import event

    @event.listens_for(storage.engine, "connect")
    def _pragmas(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    storage.engine.dispose()  # connections opened while Optuna set up its tables get the pragmas too


def checked_url(url: str) -> Optional[Path]:
    """The SQLite file a storage URL names (None for a database server); UserError (one line) for a
    URL that cannot name a study database, or whose database driver is not installed."""
    if not isinstance(url, str) or "://" not in url:
        raise UserError(f"bad storage URL {url!r}: {BAD_URL}")
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme not in ("sqlite", "postgresql", "mysql"):
        raise UserError(f"bad storage URL {url!r}: scheme {scheme!r} is not one of sqlite, postgresql, mysql")
    path = _sqlite_path(url)
    if (no_driver := missing_driver(url)) is not None:
        raise UserError(no_driver)
    return path


def check_can_make(path: Path, url: str) -> None:
    """UserError unless the SQLite file ``path`` exists as a file or can be made: its nearest
    existing folder is writable (the folders between are made with it)."""
    if path.is_dir():
        raise UserError(f"bad storage URL {url!r}: {path} is a directory")
    if path.exists():
        return
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"bad storage URL {url!r}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK):
        raise UserError(f"storage {url}: read-only folder: {folder} cannot be written, so the "
                        f"database file {path.name} cannot be made there")


def _check_url(url: str, create: bool) -> Optional[Path]:
    """:func:`checked_url`, and for SQLite: without ``create`` the file must exist; with it, the file
    can be made (its folders are made here)."""
    path = checked_url(url)
    if path is not None:
        if not create and not path.exists():
            raise UserError(f"no study database at {url} (file {path} does not exist)")
        if create:
            check_can_make(path, url)
            path.parent.mkdir(parents=True, exist_ok=True)
    return path


def holds_studies(url: str) -> bool:
    """Whether the existing database at ``url`` has Optuna's tables, read without writing (opening
    the storage would make them). UserError (one line) when it cannot be read."""
    from sqlalchemy import create_engine, inspect

    try:
        db = create_engine(url)
        try:
            with db.connect() as conn:
                return inspect(conn).has_table("studies")
        finally:
            db.dispose()
    except Exception as e:  # sqlalchemy: OperationalError, DatabaseError (damaged), missing driver, ...
        problem = storage_problem(e, url)
        raise UserError(problem or f"cannot open storage {url}: {first_line(e)}") from None


def open_storage(url: str, *, create: bool, heartbeat_interval: int = 5, grace_period: int = 20,
                 max_retry: int = 1) -> RDBStorage:
    """Open the Optuna RDB storage at ``url``: the one place a storage is made. With
    ``create=False`` a missing SQLite file is an error (and no file is created). Bad URLs, missing
    drivers and database errors raise UserError naming the URL. The heartbeat settings are those
    of :func:`use_heartbeat`; a study's own are set once its config is read."""
    path = _check_url(url, create)
    # two processes making one SQLite file take turns (Optuna's table set-up is not safe to race); in
    # a read-only folder nobody can make it, and check_writable says so before anything is written
    making = path is not None and create and os.access(path.parent, os.W_OK)
    try:
        with lock_file(path) if making else contextlib.nullcontext():
            storage = RDBStorage(
                url, engine_kwargs={"connect_args": {"timeout": _sqlite_timeout()}} if path is not None else None)
        if path is not None:
            _sqlite_wal(storage)
    except UserError:
        raise
    except Exception as e:  # sqlalchemy: ArgumentError, OperationalError, missing driver, ...
        problem = storage_problem(e, url)
        if problem is not None:
            raise UserError(problem) from None
        raise UserError(f"cannot open storage {url}: {first_line(e)}") from None
    use_heartbeat(storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period, max_retry=max_retry)
    return storage


def use_heartbeat(storage: RDBStorage, *, heartbeat_interval: int, grace_period: int, max_retry: int) -> None:
    """Heartbeats on ``storage``: a RUNNING trial silent for longer than ``grace_period`` seconds is
    failed and queued again, at most ``max_retry`` times (Optuna's ``RetryHeartbeatStaleTrialCallback``)."""
    set_heartbeat(storage, heartbeat_interval, grace_period,
                  RetryHeartbeatStaleTrialCallback(max_retry=max_retry))


def check_writable(storage: RDBStorage, url: str) -> None:
    """UserError (one line) unless the database can be written now: a read-only file or folder, or
    a database another process keeps locked, is found before a search starts, not at its first write."""
    if storage.engine.dialect.name != "sqlite":
        return  # a server checks its own permissions on each write
    from sqlalchemy import text

    path = _sqlite_path(url)
    for what, where in (("file", path), ("folder", path.parent)):  # SQLite writes journal files beside it
        if not os.access(where, os.W_OK):
            raise UserError(f"storage {url}: read-only file: the database {what} {where} cannot be written; "
                            "make it writable, or copy the database elsewhere")
    try:
        with storage.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # takes the write lock, as a commit would
            try:  # a write that changes nothing, rolled back: refused by a read-only database
                conn.execute(text("UPDATE version_info SET schema_version = schema_version"))
            finally:
                conn.exec_driver_sql("ROLLBACK")
    except Exception as e:
        problem = storage_problem(e, url)
        if problem is None:
            raise
        raise UserError(problem) from None


def require_study(storage: BaseStorage, name: str, url: Optional[str] = None) -> int:
    """The id of study ``name`` in ``storage``; UserError naming the studies there if it has none
    (``url`` names the storage in the message)."""
    try:
        return storage.get_study_id_from_name(name)
    except KeyError:
        names = sorted(s.study_name for s in storage.get_all_studies())
        raise UserError(f"no study {name!r} in {url or 'this storage'}; studies there: {names or 'none'}") from None


def find_study(storage: BaseStorage, name: str, url: Optional[str] = None) -> optuna.Study:
    """Study ``name`` of ``storage`` as an ``optuna.Study`` (no sampler: for reading it, or deleting
    it); UserError as :func:`require_study` if it is absent."""
    require_study(storage, name, url)
    return optuna.load_study(study_name=name, storage=storage)
