"""One process at a time creates a study or starts a trial in it, whatever machine it runs on.

Several ``nas search`` / ``nas resume`` processes may share a study. Starting a trial is "count the
finished and running trials, and if that is below the budget, ask a new one"; two processes doing
that at once would both see room for the last trial and overshoot the budget. So it happens under a
lock kept by the storage itself, held only for those few queries:

- PostgreSQL: a transaction-level advisory lock (``pg_advisory_xact_lock``) keyed by the study name,
  taken in a transaction on a connection of its own and released when that transaction ends (or its
  connection drops with a dead process);
- MySQL: ``GET_LOCK`` on the study name, released on the way out or when the connection drops;
- SQLite: the database file is locked as a whole, so a write lock held here would also block this
  process's own Optuna writes; instead an ``flock`` on a file beside the database
  (``<file>.db-nas-lock``), which the kernel releases when the process dies. SQLite needs a local
  disk anyway (its write-ahead log uses shared memory), so every process sharing the file sees it.
  The same lock guards making a new database file (:func:`lock_file`): Optuna's first set-up of its
  tables is not safe against a second process doing it at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path
from typing import Iterator, Optional

import sqlalchemy as sa

__all__ = ["lock_file", "study_lock", "sqlite_file"]

_SQLITE_SUFFIX = "-nas-lock"


def sqlite_file(url: sa.engine.URL) -> Optional[Path]:
    """The file of an SQLite URL (``sqlite:///x.db``, ``sqlite:///file:x.db?mode=ro&uri=true``);
    None for an in-memory database."""
    db = url.database or ""
    if url.query.get("uri") in ("true", "1") and db.startswith("file:"):
        if url.query.get("mode") == "memory":
            return None
        db = db[len("file:"):]
    if db in ("", ":memory:") or db.startswith(":memory:"):
        return None
    return Path(db)


def _key(study_name: str) -> int:
    """A signed 64-bit advisory-lock key for a study name."""
    digest = hashlib.blake2b(f"mixer-nas/{study_name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextlib.contextmanager
def lock_file(path: Path) -> Iterator[None]:
    """Hold the lock beside SQLite file ``path`` (blocks until it is free; not reentrant)."""
    fd = os.open(f"{path}{_SQLITE_SUFFIX}", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


@contextlib.contextmanager
def study_lock(engine: sa.engine.Engine, study_name: str) -> Iterator[None]:
    """Hold the study's lock in ``engine``'s database while inside (blocks until it is free)."""
    dialect = engine.dialect.name
    if dialect == "sqlite":
        path = sqlite_file(engine.url)
        if path is None:  # an in-memory database lives in one process: nothing to share
            yield
            return
        with lock_file(path):
            yield
    elif dialect == "postgresql":
        with engine.connect() as conn, conn.begin():
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _key(study_name)})
            yield
    elif dialect == "mysql":
        name = f"mixer-nas/{_key(study_name)}"
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT GET_LOCK(:name, -1)"), {"name": name})
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": name})
    else:
        raise ValueError(f"no study lock for database {dialect!r}")
