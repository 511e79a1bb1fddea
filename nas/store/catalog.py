"""The studies a storage holds (`nas studies`, ``nas.list_studies``), read without loading any space or plugin."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Optional

import pandas as pd

from nas.engine.config import STORAGE_ENV

__all__ = ["COLUMNS", "RESULTS_GLOB", "check_study_file", "list_studies", "storages_to_list"]

log = logging.getLogger("nas")

RESULTS_GLOB = "results/*.db"  # where the default storages are (sqlite:///results/<study>.db)
STATES = ("complete", "pruned", "fail", "running", "waiting")
COLUMNS = ["study", "space", "task", "objectives", "finished", "budget", *STATES, "front", "storage", "note"]


def storages_to_list(storage: Optional[str] = None) -> list[str]:
    """The storage URLs :func:`list_studies` reads: ``storage``, else ``$NAS_STORAGE``, else each
    Optuna database ``results/*.db`` under the current directory (the default storages; a file
    that is not one is skipped with a warning, as is one that cannot be read)."""
    if storage:
        return [storage]
    if os.environ.get(STORAGE_ENV):
        return [os.environ[STORAGE_ENV]]
    return [f"sqlite:///{p.as_posix()}" for p in sorted(Path().glob(RESULTS_GLOB)) if _is_optuna_file(p)]


def _is_optuna_file(path: Path) -> bool:
    """True for an SQLite file with Optuna's tables, read without writing (opening a storage on a
    file creates the tables: that must not happen to another program's database)."""
    try:
        with sqlite3.connect(f"file:{path.resolve().as_posix()}?mode=ro", uri=True) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as e:
        log.warning(f"skipped {path}: cannot be read as an SQLite database ({e})")
        return False
    if not {"studies", "trials", "version_info"} <= tables:
        log.warning(f"skipped {path}: not an Optuna storage")
        return False
    return True


def check_study_file(url: str) -> None:
    """UserError when ``url`` names an SQLite file that is not an Optuna storage: an empty file, or
    another program's database. Opening a storage there would create Optuna's tables in it, and a
    command that only reads must not write (another database is left as it is)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from nas.errors import UserError
    from nas.store.study_lock import sqlite_file

    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # open_storage says what is wrong with the URL
    path = sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
    if path is None or not path.is_file():
        return
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty, not a study database (storage {url})")
    try:
        with sqlite3.connect(f"file:{path.resolve().as_posix()}?mode=ro", uri=True) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error:
        return  # open_storage says why it cannot be read
    if not {"studies", "trials", "version_info"} <= tables:
        raise UserError(f"{path} is not a study database: it has no Optuna tables (storage {url})")


def list_studies(storage: Optional[str] = None) -> pd.DataFrame:
    """One row per study in ``storage`` (see :func:`storages_to_list` for the default): its space
    and task, objectives, the trials that count toward the budget and the budget, trials by state,
    the size of its Pareto front (feasible COMPLETE trials, as :func:`nas.pareto_front`), its
    storage, and a note for a study without a stored config (made elsewhere, or whose creation
    was interrupted). UserError for a storage that cannot be opened."""
    from nas.store.storage import open_storage

    rows = []
    for url in storages_to_list(storage):
        check_study_file(url)
        store = open_storage(url, create=False)
        for summary in sorted(store.get_all_studies(), key=lambda s: s.study_name):
            rows.append(_row(store, summary.study_name, url))
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["budget"] = df["budget"].astype("Int64")  # none for a study without a config
    return df


def _row(store, name: str, url: str) -> dict:
    from nas.results.trials import front_size
    from nas.store.storage import find_study
    from nas.store.study import CONFIG_ATTR, count_finished

    study = find_study(store, name, url)
    trials = study.get_trials(deepcopy=False)
    row = {"study": name, "storage": url, "finished": count_finished(trials), "front": front_size(study),
           "objectives": ", ".join(f"{m} {d.name.lower()[:3]}" for m, d in
                                   zip(study.metric_names or [f"value{i}" for i in range(len(study.directions))],
                                       study.directions))}
    row.update({s: sum(t.state.name.lower() == s for t in trials) for s in STATES})
    raw = study.user_attrs.get(CONFIG_ATTR)
    if raw is None:
        return {**row, "space": None, "task": None, "budget": None,
                "note": "no stored config: not made by `nas search`, or its creation was interrupted"}
    config = json.loads(raw)
    return {**row, "space": config["space"], "task": _task_name(config["space_yaml"]), "budget": config["trials"],
            "note": None}


def _task_name(space_yaml: str) -> Optional[str]:
    import yaml

    task = (yaml.safe_load(space_yaml) or {}).get("task")
    return task.get("name") if isinstance(task, dict) else task
