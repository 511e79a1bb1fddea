"""Optuna study and storage: create or load a study, with its SearchConfig stored inside it.

Storage is any Optuna RDB URL (SQLite by default, PostgreSQL for several machines), opened once
per command through :func:`nas.store.storage.open_storage`. Heartbeats are on, with the study's
settings: a trial whose process died is failed once its heartbeat is older than the grace period
and re-queued once (``RetryHeartbeatStaleTrialCallback``), so an interrupted search loses nothing.
"""

from __future__ import annotations

import warnings
from typing import Optional

import optuna
from optuna.storages import RDBStorage

from nas.engine import interrupts
from nas.engine.config import SAMPLERS, SearchConfig
from nas.errors import UserError
from nas.store.storage import (
    check_can_make,
    check_writable,
    checked_url,
    find_study,
    holds_studies,
    open_storage,
    require_study,
    use_heartbeat,
)
from nas.store.study_lock import study_lock
from nas.store.trial_attrs import CONFIG_ATTR, ENV_ATTR
from nas.store.trial_rows import count_finished, finished_count  # count_finished: re-exported here

__all__ = [
    "CONFIG_ATTR",
    "create_or_load_study",
    "check_study",
    "load_study",
    "load_study_from",
    "study_summary",
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

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
optuna.logging.set_verbosity(optuna.logging.ERROR)


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


def load_study(storage_url: str, study_name: str, *, writable: bool = False) -> tuple[optuna.Study, SearchConfig]:
    """Load an existing study made by `nas search`; UserError if absent or not ours, and with
    ``writable`` if its database cannot be written now (read-only, locked)."""
    storage = open_storage(storage_url, create=False)
    return load_study_from(storage, storage_url, study_name, writable=writable)


def load_study_from(storage: RDBStorage, storage_url: str, study_name: str, *,
             writable: bool = False) -> tuple[optuna.Study, SearchConfig]:
    """:func:`load_study` from ``storage`` (opened at ``storage_url``), which takes the heartbeat
    settings of the study's stored config."""
    study_id = require_study(storage, study_name, storage_url)
    attrs = storage.get_study_user_attrs(study_id)
    n = len(storage.get_all_trials(study_id, deepcopy=False))
    if CONFIG_ATTR not in attrs:
        raise _no_config(storage_url, study_name, n)
    config = SearchConfig.from_json(attrs[CONFIG_ATTR])
    config.storage = storage_url
    use_heartbeat(storage, heartbeat_interval=config.heartbeat_interval, grace_period=config.grace_period,
                  max_retry=config.max_retry)
    if writable:
        check_writable(storage, storage_url)
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=make_sampler(config, n))
    return study, config


def create_or_load_study(config: SearchConfig) -> tuple[optuna.Study, SearchConfig, bool]:
    """Create the study for ``config``, or load it if it exists (then the space must match).
    Returns (study, effective config, created). Creation holds the study's lock, so two processes
    starting the same search at once make one study, and a stop signal waits until it is complete;
    a study left without its config (the process was killed between the writes) is completed."""
    space = config.load_space()  # checked before anything is written (read once per config)
    _check_config(config)
    storage = open_storage(config.storage, create=True, heartbeat_interval=config.heartbeat_interval,
                           grace_period=config.grace_period, max_retry=config.max_retry)
    check_writable(storage, config.storage)
    with study_lock(storage.engine, config.study), interrupts.deferred():
        names = [s.study_name for s in storage.get_all_studies()]
        if config.study in names and not _unfinished(storage, config.study, space):
            study, stored = load_study_from(storage, config.storage, config.study)
            return _check_same_space(study, stored, config), stored, False
        return _create(storage, config, space, exists=config.study in names), config, True


def check_study(config: SearchConfig) -> Optional[SearchConfig]:
    """What :func:`create_or_load_study` checks before it writes, writing nothing (`nas search
    --dry-run`): the sampler and the seed, the storage URL and its driver, that a new database file
    could be made, and that a study of that name in an existing database can take this search (the
    same space, the database writable now). Returns that study's stored config (None for a new one)."""
    space = config.load_space()
    _check_config(config)
    url = config.storage
    path = checked_url(url)
    if path is not None:
        check_can_make(path, url)
    if path is not None and not path.exists() or not holds_studies(url):
        return None  # a new database: nothing in it to check
    storage = open_storage(url, create=False)
    try:  # the connections are closed on the way out, so SQLite leaves no journal files behind
        check_writable(storage, url)
        names = [s.study_name for s in storage.get_all_studies()]
        if config.study not in names or _unfinished(storage, config.study, space):
            return None  # a new study, or one whose creation the search finishes
        stored = _stored_config(storage, url, config.study)
        _check_same_space(None, stored, config)
        return stored
    finally:
        storage.engine.dispose()


def _stored_config(storage: RDBStorage, url: str, name: str) -> SearchConfig:
    """The config study ``name`` stores (as :func:`load_study` reads it); UserError if it has none."""
    study_id = storage.get_study_id_from_name(name)
    attrs = storage.get_study_user_attrs(study_id)
    if CONFIG_ATTR not in attrs:
        raise _no_config(url, name, len(storage.get_all_trials(study_id, deepcopy=False)))
    config = SearchConfig.from_json(attrs[CONFIG_ATTR])
    config.storage = url
    return config


def _check_config(config: SearchConfig) -> None:
    """UserError for a sampler this engine does not make, or a seed out of range for the budget."""
    make_sampler(config)
    check_seed(config.seed, config.trials)


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
    study_id = require_study(storage, study_name, storage_url)
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
        study = find_study(storage, study_name, storage_url)
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
def budget_count(study: optuna.Study) -> int:
    """Finished trials that count toward `--trials`: COMPLETE, PRUNED and FAIL, except trials that
    were interrupted (Ctrl-C, SIGTERM) or went stale and were queued again (their retry counts instead)."""
    return finished_count(study)  # counted in the database (the same count as count_finished of every trial)
