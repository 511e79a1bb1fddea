"""Block latency tables kept in a study's storage (the Optuna RDB database), beside its studies.

One table of our own, ``mixer_nas_part_latency``, made on first use through SQLAlchemy on the
storage's engine, so every study, search process and machine that shares the database shares the
timings. A row is one part (stem, transition, block, readout; ``evaluators.block_parts``) timed
alone in one environment (``evaluators.predictor.environment_key``)::

    part_hash, env_hash   primary key: hashes of the part's and the environment's canonical JSON
    kind, part, env       the part's kind, and both JSON texts (readable, and checked on lookup)
    profile               the profile it was timed for (informational; the shape is in the part)
    median_ms, spread, n  median ms per call, MAD / median, timed samples
    created               when it was stored

The first timing of a key stands: a process that finds the key already written (another process
timed the same part at the same time) keeps the stored row.
"""

from __future__ import annotations

import datetime
from typing import Collection, Mapping, Optional

import sqlalchemy as sa

from evaluators.block_parts import PartTiming
from evaluators.predictor import LatencyTable, key_hash

__all__ = ["TABLE_NAME", "SQLLatencyTable", "open_latency_table", "worker_url"]

TABLE_NAME = "mixer_nas_part_latency"
_META = sa.MetaData()
PARTS = sa.Table(
    TABLE_NAME, _META,
    sa.Column("part_hash", sa.String(32), primary_key=True),
    sa.Column("env_hash", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("part", sa.Text, nullable=False),
    sa.Column("env", sa.Text, nullable=False),
    sa.Column("profile", sa.String(128), nullable=False),
    sa.Column("median_ms", sa.Float, nullable=False),
    sa.Column("spread", sa.Float, nullable=False),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("created", sa.DateTime, nullable=False),
)
_CHUNK = 400  # keys per IN (...) query: well under every database's bound-parameter limit


class SQLLatencyTable(LatencyTable):
    """A :class:`~evaluators.predictor.LatencyTable` in the database of ``engine`` (the study
    storage's). The table is created on first use; reads and writes are short transactions."""

    def __init__(self, engine: sa.engine.Engine):
        self.engine = engine
        self._ready = False

    def _ensure(self) -> None:
        if self._ready:
            return
        try:
            _META.create_all(self.engine, checkfirst=True)
        except sa.exc.DatabaseError:  # another process created it between the check and the create
            if not sa.inspect(self.engine).has_table(TABLE_NAME):
                raise
        self._ready = True

    def lookup(self, env: str, keys: Collection[str]) -> dict[str, PartTiming]:
        self._ensure()
        by_hash = {key_hash(k): k for k in keys}
        hashes = list(by_hash)
        out = {}
        with self.engine.connect() as conn:
            for i in range(0, len(hashes), _CHUNK):
                q = sa.select(PARTS.c.part_hash, PARTS.c.part, PARTS.c.median_ms, PARTS.c.spread, PARTS.c.n).where(
                    PARTS.c.env_hash == key_hash(env), PARTS.c.part_hash.in_(hashes[i:i + _CHUNK]))
                for h, part, med, spread, n in conn.execute(q):
                    if by_hash[h] == part:  # a hash collision would otherwise mix two parts up
                        out[part] = PartTiming(med, spread, n)
        return out

    def store(self, env: str, timings: Mapping[str, PartTiming], profile: str = "") -> None:
        self._ensure()
        new = dict(timings)
        for k in self.lookup(env, list(new)):
            new.pop(k)
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        rows = [{"part_hash": key_hash(k), "env_hash": key_hash(env), "kind": _kind(k), "part": k, "env": env,
                 "profile": profile, "median_ms": t.median_ms, "spread": t.spread, "n": t.n, "created": now}
                for k, t in new.items()]
        for row in rows:  # one transaction each: a row another process wrote meanwhile is skipped alone
            try:
                with self.engine.begin() as conn:
                    conn.execute(PARTS.insert(), [row])
            except sa.exc.IntegrityError:
                pass

    def count(self, env: Optional[str] = None) -> int:
        """Rows in the table (of one environment if ``env`` is given)."""
        self._ensure()
        q = sa.select(sa.func.count()).select_from(PARTS)
        if env is not None:
            q = q.where(PARTS.c.env_hash == key_hash(env))
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar())


def _kind(key: str) -> str:
    import json

    return json.loads(key)["part"]


def open_latency_table(storage_url: str) -> SQLLatencyTable:
    """The latency table of the storage at ``storage_url`` (the database is made if missing, as
    ``nas search`` would); :class:`~nas.errors.UserError` for a bad or unreachable URL."""
    from nas.store.storage import open_storage

    return SQLLatencyTable(open_storage(storage_url, create=True).engine)


def worker_url(storage_url: str, *, remote_workers: bool) -> Optional[str]:
    """The URL at which a Ray worker reaches the latency tables of ``storage_url``: the URL itself
    for a database server; for SQLite, the file's absolute path (workers run in their own folders)
    when the workers share this machine, and None when they may run elsewhere (``remote_workers``:
    the file is not theirs to reach; each trial then keeps its parts in memory)."""
    from sqlalchemy.engine import make_url

    from nas.store.study_lock import sqlite_file

    url = make_url(storage_url)
    if url.get_backend_name() != "sqlite":
        return storage_url
    path = sqlite_file(url)
    if remote_workers or path is None or url.query:
        return None
    return url.set(database=str(path.resolve())).render_as_string(hide_password=False)
