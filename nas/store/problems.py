"""What went wrong with a study's database, in one line a user can act on.

The database driver's error sits at the end of a chain (Optuna's ``StorageInternalError`` from
SQLAlchemy's ``OperationalError`` from ``sqlite3.OperationalError``); :func:`storage_problem`
finds it and says what it means: a damaged file, a read-only file, a database locked by another
process, a missing folder, a full disk, a lost connection.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["disk_io_error", "storage_problem"]

# (fragment of the driver's message, lower case) -> what it means and what to do
_KNOWN = [
    (("file is not a database", "malformed", "file is encrypted"),
     "the database file is damaged (database disk image is malformed or not a database): restore it from a "
     "copy, or use another --storage"),
    (("readonly", "read-only", "read only"),
     "read-only file: the database (or its folder) cannot be written; make it writable, or copy it elsewhere"),
    (("database is locked", "database table is locked"),
     "the database is locked by another process, which kept it locked longer than this command waits "
     "(MIXER_NAS_SQLITE_TIMEOUT, 60 s by default); stop that process, or retry when it is done"),
    (("unable to open database file",),
     "cannot open the database file (its folder is missing or not writable, or the file is not a regular file)"),
    (("disk i/o error",), "disk I/O error while reading or writing the database: check that the disk works and that "
                          "the database, its -wal and -shm files and their folder can be written (not read-only, "
                          "not immutable: lsattr), then `nas resume` goes on; the finished trials are kept"),
    (("database or disk is full",), "the disk holding the database is full"),
]


def _driver_errors(exc: BaseException):
    """The exceptions in ``exc``'s chain that come from a database driver or SQLAlchemy."""
    import sqlalchemy.exc

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
            yield exc.orig
        elif isinstance(exc, sqlalchemy.exc.SQLAlchemyError) or type(exc).__module__.split(".")[0] in (
                "sqlite3", "psycopg2", "psycopg", "pymysql", "MySQLdb"):
            yield exc
        exc = exc.__cause__ or exc.__context__


def storage_problem(exc: BaseException, url: Optional[str] = None) -> Optional[str]:
    """One line for a database error anywhere in ``exc``'s chain, naming ``url`` when given; None
    when the chain holds no database error (a bug elsewhere, which should show its traceback)."""
    for cause in _driver_errors(exc):
        text = " ".join(str(cause).split()) or type(cause).__name__
        where = f"storage {url}: " if url else "storage: "
        for fragments, meaning in _KNOWN:
            if any(f in text.lower() for f in fragments):
                return f"{where}{meaning} ({text})"
        from sqlalchemy.exc import OperationalError

        if isinstance(cause, OperationalError) or "Operational" in type(cause).__name__:
            return f"{where}database error: {text}"
    return None


def disk_io_error(exc: BaseException) -> bool:
    """Whether ``exc``'s chain holds a database's disk I/O error. Then the process should end
    without closing its SQLite connections: closing one writes the WAL index (the memory-mapped
    ``-shm`` file), and where the files were made immutable the kernel answers that write with
    SIGBUS, a crash after the one-line error. Skipping the close loses nothing: committed trials
    are in the database and its WAL, which the next open reads, as after a kill."""
    return any("disk i/o error" in str(cause).lower() for cause in _driver_errors(exc))
