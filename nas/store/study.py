"""Optuna study and storage: create or load a study, with its SearchConfig stored inside it.

Storage is any Optuna RDB URL (SQLite by default, PostgreSQL for several machines). Heartbeats
are on: a trial whose process died is failed once its heartbeat is older than the grace period
and re-queued once (``RetryHeartbeatStaleTrialCallback``), so an interrupted search loses nothing.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Optional

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from nas.engine import interrupts
from nas.engine.config import SAMPLERS, SearchConfig
from nas.errors import UserError
from nas.store.drivers import missing_driver
from nas.store.problems import storage_problem
from nas.store.study_lock import lock_file, sqlite_file, study_lock
from nas.store.trial_attrs import CONFIG_ATTR, ENV_ATTR, INTERRUPTED_KEY, retry_history
from search_spaces.failures import first_line

__all__ = [
    "CONFIG_ATTR",
    "open_storage",
    "create_or_load_study",
    "load_study",
    "delete_study",
    "make_sampler",
    "check_seed",
    "budget_count",
    "count_finished",
    "save_budget",
    "ENV_ATTR",
    "SEED_LIMIT",
    "study_summary",
]

SEED_LIMIT = 2**32  # samplers take seeds in [0, 2**32 - 1]
SQLITE_TIMEOUT_ENV = "MIXER_NAS_SQLITE_TIMEOUT"  # seconds a command waits for a locked SQLite database [60]

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
optuna.logging.set_verbosity(optuna.logging.ERROR)


def _sqlite_path(url: str) -> Optional[Path]:
    """The file of an SQLite URL; None for other databases. UserError for an in-memory one (a
    search there would train every trial and keep none) and for a URL SQLAlchemy cannot parse."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(f"bad storage URL {url!r}: expected e.g. sqlite:///results/demo.db or "
                        "postgresql://user@host/db") from None
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


def open_storage(url: str, *, create: bool, heartbeat_interval: int = 5, grace_period: int = 20,
                 max_retry: int = 1) -> RDBStorage:
    """Open an Optuna RDB storage. With ``create=False`` a missing SQLite file is an error (and no
    file is created). Bad URLs raise UserError naming the URL."""
    if not isinstance(url, str) or "://" not in url:
        raise UserError(f"bad storage URL {url!r}: expected e.g. sqlite:///results/demo.db or "
                        "postgresql://user@host/db")
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme not in ("sqlite", "postgresql", "mysql"):
        raise UserError(f"bad storage URL {url!r}: scheme {scheme!r} is not one of sqlite, postgresql, mysql")
    path = _sqlite_path(url)
    if path is not None:
        if not create and not path.exists():
            raise UserError(f"no study database at {url} (file {path} does not exist)")
        if create:
            if path.exists() and path.is_dir():
                raise UserError(f"bad storage URL {url!r}: {path} is a directory")
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() and not os.access(path.parent, os.W_OK):
                raise UserError(f"storage {url}: read-only folder: {path.parent} cannot be written, so the "
                                f"database file {path.name} cannot be made there")
    if (no_driver := missing_driver(url)) is not None:
        raise UserError(no_driver)
    # two processes making one SQLite file take turns (Optuna's table set-up is not safe to race); in
    # a read-only folder nobody can make it, and check_writable says so before anything is written
    making = path is not None and create and os.access(path.parent, os.W_OK)
    try:
        with lock_file(path) if making else contextlib.nullcontext():
            storage = RDBStorage(
                url,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
                engine_kwargs={"connect_args": {"timeout": _sqlite_timeout()}} if path is not None else None,
            )
        if path is not None:
            _sqlite_wal(storage)
        return storage
    except UserError:
        raise
    except Exception as e:  # sqlalchemy: ArgumentError, OperationalError, missing driver, ...
        problem = storage_problem(e, url)
        if problem is not None:
            raise UserError(problem) from None
        raise UserError(f"cannot open storage {url}: {first_line(e)}") from None


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


def make_sampler(config: SearchConfig, n_existing: int = 0):
    """The sampler named in the config. Samplers are not persisted by Optuna, so a resumed run
    builds a fresh one, seeded past the trials already in the study so it does not repeat them
    (modulo 2**32, so a study made with any valid seed can always be loaded)."""
    seed = (config.seed + n_existing) % SEED_LIMIT
    pop = int(config.extra.get("population_size", max(4, min(50, config.trials // 4))))
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=pop)
    if config.sampler == "tpe":
        # the spaces are conditional (a layer's mixer parameters exist only for its mixer): group=True
        # models each set of parameters that appear together jointly, where plain multivariate TPE
        # samples every parameter outside the set common to all trials independently (at random).
        # Measured: benchmarks/search-efficiency/summary.md
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    raise UserError(f"unknown sampler {config.sampler!r}; choose one of {list(SAMPLERS)}")


def check_seed(seed: int, budget: int) -> None:
    """The sampler is seeded with ``seed`` plus the number of trials in the study, and seeds end at
    2**32 - 1: a seed must leave room for the budget. UserError (naming --seed) otherwise."""
    top = SEED_LIMIT - 1 - budget
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= top:
        raise UserError(f"--seed: {seed!r} is out of range; with --trials {budget} it must be an integer in "
                        f"[0, {top}] (the sampler is seeded with seed + trials so far, at most 2**32 - 1)")


def _no_config(url: str, name: str, n_trials: int) -> UserError:
    fix = f"remove it with `nas delete --study {name} --storage {url}`"
    if n_trials == 0:
        return UserError(f"study {name!r} in {url} has no stored config: its creation was interrupted; run the same "
                         f"`nas search` again to finish creating it, or {fix}")
    return UserError(f"study {name!r} in {url} was not made by `nas search` (no stored config); "
                     f"use another --study name, or {fix}")


def load_study(storage_url: str, study_name: str, *, writable: bool = False,
               **storage_kwargs) -> tuple[optuna.Study, SearchConfig]:
    """Load an existing study made by `nas search`; UserError if absent or not ours, and with
    ``writable`` if its database cannot be written now (read-only, locked)."""
    storage = open_storage(storage_url, create=False, **storage_kwargs)
    names = [s.study_name for s in storage.get_all_studies()]
    if study_name not in names:
        raise UserError(f"no study {study_name!r} in {storage_url}; studies there: {sorted(names) or 'none'}")
    study_id = storage.get_study_id_from_name(study_name)
    attrs = storage.get_study_user_attrs(study_id)
    if CONFIG_ATTR not in attrs:
        raise _no_config(storage_url, study_name, len(storage.get_all_trials(study_id, deepcopy=False)))
    config = SearchConfig.from_json(attrs[CONFIG_ATTR])
    config.storage = storage_url
    storage = open_storage(storage_url, create=False, heartbeat_interval=config.heartbeat_interval,
                           grace_period=config.grace_period, max_retry=config.max_retry)
    if writable:
        check_writable(storage, storage_url)
    n = len(storage.get_all_trials(storage.get_study_id_from_name(study_name), deepcopy=False))
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=make_sampler(config, n))
    return study, config


def create_or_load_study(config: SearchConfig) -> tuple[optuna.Study, SearchConfig, bool]:
    """Create the study for ``config``, or load it if it exists (then the space must match).
    Returns (study, effective config, created). Creation holds the study's lock, so two processes
    starting the same search at once make one study, and a stop signal waits until it is complete;
    a study left without its config (the process was killed between the writes) is completed."""
    space = config.load_space()  # validates before anything is written
    make_sampler(config)  # validates the sampler name
    check_seed(config.seed, config.trials)
    storage = open_storage(config.storage, create=True, heartbeat_interval=config.heartbeat_interval,
                           grace_period=config.grace_period, max_retry=config.max_retry)
    check_writable(storage, config.storage)
    with study_lock(storage.engine, config.study), interrupts.deferred():
        names = [s.study_name for s in storage.get_all_studies()]
        if config.study in names and not _unfinished(storage, config.study, space):
            study, stored = load_study(config.storage, config.study)
            return _check_same_space(study, stored, config), stored, False
        return _create(storage, config, space, exists=config.study in names), config, True


def _unfinished(storage: RDBStorage, name: str, space) -> bool:
    """True for a study that creation left without its config (no trials, the space's directions)."""
    study_id = storage.get_study_id_from_name(name)
    return (CONFIG_ATTR not in storage.get_study_user_attrs(study_id)
            and not storage.get_all_trials(study_id, deepcopy=False)
            and storage.get_study_directions(study_id) == [optuna.study.StudyDirection[d.upper()]
                                                           for d in space.objectives.values()])


def _create(storage: RDBStorage, config: SearchConfig, space, exists: bool) -> optuna.Study:
    if exists:  # finish what an interrupted creation began
        study = optuna.load_study(study_name=config.study, storage=storage, sampler=make_sampler(config))
    else:
        study = optuna.create_study(study_name=config.study, storage=storage,
                                    directions=list(space.objectives.values()), sampler=make_sampler(config))
    study.set_metric_names(list(space.objectives))
    from evaluators.latency import environment

    study.set_user_attr(ENV_ATTR, environment(space.latency.get("device", "cpu")))
    study.set_user_attr(CONFIG_ATTR, config.to_json())  # last: a study with its config is complete
    return study


def study_summary(storage_url: str, study_name: str) -> str:
    """'12 trials (10 complete, 2 fail)', and whether the study lacks its config; UserError if absent."""
    storage = open_storage(storage_url, create=False)
    names = [s.study_name for s in storage.get_all_studies()]
    if study_name not in names:
        raise UserError(f"no study {study_name!r} in {storage_url}; studies there: {sorted(names) or 'none'}")
    study_id = storage.get_study_id_from_name(study_name)
    states: dict[str, int] = {}
    for t in storage.get_all_trials(study_id, deepcopy=False):
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    text = f"{sum(states.values())} trials" + (f" ({', '.join(f'{v} {k}' for k, v in sorted(states.items()))})"
                                               if states else "")
    if CONFIG_ATTR not in storage.get_study_user_attrs(study_id):
        text += ", no stored config"
    return text


def delete_study(storage_url: str, study_name: str) -> None:
    """Delete a study and all its trials. UserError if it is absent, or if a live process still runs
    one of its trials (a fresh heartbeat): stop that search first."""
    from nas.store.heartbeats import heartbeat_ages

    storage = open_storage(storage_url, create=False)
    check_writable(storage, storage_url)
    with study_lock(storage.engine, study_name), interrupts.deferred():
        study_summary(storage_url, study_name)  # exists?
        study = optuna.load_study(study_name=study_name, storage=storage)
        raw = study.user_attrs.get(CONFIG_ATTR)
        grace = SearchConfig.from_json(raw).grace_period if raw else SearchConfig.grace_period
        live = sorted(n for n, age in heartbeat_ages(study).items() if age is not None and age <= grace)
        if live:
            raise UserError(f"study {study_name!r} in {storage_url} has trial(s) {', '.join(f'#{n}' for n in live)} "
                            f"RUNNING with a live heartbeat (a search is running): stop it first")
        optuna.delete_study(study_name=study_name, storage=storage)


def save_budget(study: optuna.Study, config: SearchConfig, trials: Optional[int]) -> bool:
    """Make ``trials`` the study's stored budget (so a later `nas resume` keeps it); True if changed.
    UserError (nothing changed) when the study already has more finished trials than ``trials``."""
    if not trials or trials == config.trials:
        return False
    done = budget_count(study)
    if trials < done:
        raise UserError(f"--trials {trials}: study {config.study!r} already has {done} finished trials; the budget is "
                        f"their new total, so give --trials {done} or more")
    config.trials = trials
    attrs = dict(study.user_attrs)
    stored = SearchConfig.from_json(attrs[CONFIG_ATTR])
    stored.trials = trials
    study.set_user_attr(CONFIG_ATTR, stored.to_json())
    return True


def _check_same_space(study, stored: SearchConfig, requested: SearchConfig):
    import yaml

    if yaml.safe_load(stored.space_yaml) != yaml.safe_load(requested.space_yaml):
        if stored.space == requested.space:
            raise UserError(
                f"study {requested.study!r} in {requested.storage} was made with an earlier version of space "
                f"{stored.space!r} (the file changed since); use another --study name, or `nas resume --study "
                f"{requested.study}` to continue with the stored version"
            )
        raise UserError(
            f"study {requested.study!r} in {requested.storage} was made with space {stored.space!r}, "
            f"which differs from {requested.space!r}; use another --study name, or `nas resume --study {requested.study}`"
        )
    return study


# ------------------------------------------------------------------------- budget and stale trials
def _retried_numbers(trials) -> set[int]:
    out: set[int] = set()
    for t in trials:
        out.update(retry_history(t))
    return out


def budget_count(study: optuna.Study) -> int:
    """Finished trials that count toward `--trials`: COMPLETE, PRUNED and FAIL, except trials that
    were interrupted (Ctrl-C, SIGTERM) or went stale and were queued again (their retry counts instead)."""
    return count_finished(study.get_trials(deepcopy=False))


def count_finished(trials) -> int:
    """:func:`budget_count` of a list of trials already read."""
    retried = _retried_numbers(trials)
    n = 0
    for t in trials:
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            n += 1
        elif t.state == TrialState.FAIL and t.number not in retried and not t.user_attrs.get(INTERRUPTED_KEY):
            n += 1
    return n
