"""Optuna study and storage: create or load a study, with its SearchConfig stored inside it.

Storage is any Optuna RDB URL (SQLite by default, PostgreSQL for several machines). Heartbeats
are on: a trial whose process died is failed once its heartbeat is older than the grace period
and re-queued once (``RetryHeartbeatStaleTrialCallback``), so an interrupted search loses nothing.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Optional

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from nas.config import SAMPLERS, SearchConfig
from nas.errors import UserError
from nas.storage_drivers import missing_driver

__all__ = [
    "CONFIG_ATTR",
    "open_storage",
    "create_or_load_study",
    "load_study",
    "make_sampler",
    "budget_count",
    "reap_stale_trials",
    "save_budget",
    "ENV_ATTR",
]

CONFIG_ATTR = "mixer_nas.config"
ENV_ATTR = "mixer_nas.environment"

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
optuna.logging.set_verbosity(optuna.logging.ERROR)


def _sqlite_path(url: str) -> Optional[Path]:
    if url.startswith("sqlite:///"):
        rest = url[len("sqlite:///"):]
        return None if rest in ("", ":memory:") else Path(rest)
    return None


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
    if (no_driver := missing_driver(url)) is not None:
        raise UserError(no_driver)
    try:
        storage = RDBStorage(
            url,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
            engine_kwargs={"connect_args": {"timeout": 60}} if path is not None else None,
        )
        if path is not None:
            _sqlite_wal(storage)
        return storage
    except UserError:
        raise
    except Exception as e:  # sqlalchemy: ArgumentError, OperationalError, missing driver, ...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot open storage {url}: {msg}") from None


def make_sampler(config: SearchConfig, n_existing: int = 0):
    """The sampler named in the config. Samplers are not persisted by Optuna, so a resumed run
    builds a fresh one, seeded past the trials already in the study so it does not repeat them."""
    seed = config.seed + n_existing
    pop = int(config.extra.get("population_size", max(4, min(50, config.trials // 4))))
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=pop)
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    raise UserError(f"unknown sampler {config.sampler!r}; choose one of {list(SAMPLERS)}")


def load_study(storage_url: str, study_name: str, **storage_kwargs) -> tuple[optuna.Study, SearchConfig]:
    """Load an existing study made by `nas search`; UserError if absent or not ours."""
    storage = open_storage(storage_url, create=False, **storage_kwargs)
    names = [s.study_name for s in storage.get_all_studies()]
    if study_name not in names:
        raise UserError(f"no study {study_name!r} in {storage_url}; studies there: {sorted(names) or 'none'}")
    attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(study_name))
    if CONFIG_ATTR not in attrs:
        raise UserError(f"study {study_name!r} in {storage_url} was not made by `nas search` (no stored config)")
    config = SearchConfig.from_json(attrs[CONFIG_ATTR])
    config.storage = storage_url
    storage = open_storage(storage_url, create=False, heartbeat_interval=config.heartbeat_interval,
                           grace_period=config.grace_period, max_retry=config.max_retry)
    n = len(storage.get_all_trials(storage.get_study_id_from_name(study_name), deepcopy=False))
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=make_sampler(config, n))
    return study, config


def create_or_load_study(config: SearchConfig) -> tuple[optuna.Study, SearchConfig, bool]:
    """Create the study for ``config``, or load it if it exists (then the space must match).
    Returns (study, effective config, created)."""
    space = config.load_space()  # validates before anything is written
    make_sampler(config)  # validates the sampler name
    path = _sqlite_path(config.storage)
    if path is not None and path.exists():
        storage = open_storage(config.storage, create=False)
        names = [s.study_name for s in storage.get_all_studies()]
        if config.study in names:
            study, stored = load_study(config.storage, config.study)
            return _check_same_space(study, stored, config), stored, False
    storage = open_storage(config.storage, create=True, heartbeat_interval=config.heartbeat_interval,
                           grace_period=config.grace_period, max_retry=config.max_retry)
    names = [s.study_name for s in storage.get_all_studies()]
    if config.study in names:
        study, stored = load_study(config.storage, config.study)
        return _check_same_space(study, stored, config), stored, False
    directions = list(space.objectives.values())
    study = optuna.create_study(study_name=config.study, storage=storage, directions=directions,
                                sampler=make_sampler(config))
    study.set_metric_names(list(space.objectives))
    study.set_user_attr(CONFIG_ATTR, config.to_json())
    from evaluators.latency import environment

    study.set_user_attr(ENV_ATTR, environment(space.latency.get("device", "cpu")))
    return study, config, True


def save_budget(study: optuna.Study, config: SearchConfig, trials: Optional[int]) -> bool:
    """Make ``trials`` the study's stored budget (so a later `nas resume` keeps it); True if changed."""
    if not trials or trials == config.trials:
        return False
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
        out.update(t.system_attrs.get("retry_history", []))
    return out


def budget_count(study: optuna.Study) -> int:
    """Finished trials that count toward `--trials`: COMPLETE, PRUNED and FAIL, except trials that
    were interrupted (Ctrl-C) or went stale and were queued again (their retry counts instead)."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried_numbers(trials)
    n = 0
    for t in trials:
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            n += 1
        elif t.state == TrialState.FAIL and t.number not in retried and not t.user_attrs.get("interrupted"):
            n += 1
    return n


def reap_stale_trials(study: optuna.Study, config: SearchConfig, log=print) -> None:
    """Trials left RUNNING by a dead process: wait until their heartbeat is older than the grace
    period, then fail them (the retry callback queues each again) and log what became of each.
    Trials of live workers keep beating and stay RUNNING."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return
    wait = config.grace_period + config.heartbeat_interval + 1
    log(f"{len(running)} trial(s) RUNNING from an earlier run; waiting up to {wait}s for a heartbeat "
        f"or to fail and re-queue them")
    deadline = time.monotonic() + wait
    while True:
        optuna.storages.fail_stale_trials(study)
        left = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    retried_as = {t.system_attrs["retry_history"][-1]: t.number for t in trials.values()
                  if t.system_attrs.get("retry_history")}
    beating = {t.number for t in left}
    stale = f"no heartbeat for over {config.grace_period}s, failed"
    for t in running:
        if t.number in beating:
            continue
        name = f"trial #{t.number}" + (f" ({t.user_attrs['arch_id']})" if t.user_attrs.get("arch_id") else "")
        now = trials[t.number]
        if now.state != TrialState.FAIL or now.user_attrs.get("error"):  # its own driver finished it meanwhile
            log(f"{name}: finished by its driver ({now.state.name})")
        elif t.number in retried_as:
            log(f"{name}: {stale}; queued again as #{retried_as[t.number]}")
        else:
            log(f"{name}: {stale}; not queued again (already retried {config.max_retry} time(s))")
    if beating:
        log(f"trial(s) {', '.join(f'#{n}' for n in sorted(beating))} still have a live heartbeat: "
            "left to the driver that runs them")
