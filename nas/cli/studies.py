"""`nas studies`: the studies in a storage; `nas delete`: remove one (e.g. one whose creation a kill interrupted)."""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer
from rich.table import Table

from nas.cli.base import StorageOpt, StudyOpt, app, err, out, storage_for, user_errors
from nas.errors import UserError


@app.command()
@user_errors
def studies(storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (default: $NAS_STORAGE "
                                                                          "if set, else every results/*.db)"),
            format: str = typer.Option("table", "--format", help="table | csv | json")):
    """List the studies in a storage: space, task, trials (finished of the budget, and by state),
    Pareto front size. Without --storage or $NAS_STORAGE: the default storages, results/*.db."""
    from nas.engine.config import STORAGE_ENV
    from nas.store.catalog import RESULTS_GLOB, list_studies

    if format not in ("table", "csv", "json"):
        raise UserError(f"--format: {format!r} is not one of ['table', 'csv', 'json']")
    df = list_studies(storage)
    if format != "table":
        sys.stdout.write(df.to_csv(index=False) if format == "csv" else df.to_json(orient="records", indent=2) + "\n")
        return
    where = storage or os.environ.get(STORAGE_ENV) or RESULTS_GLOB
    if df.empty:
        err.print(f"no studies in {where}", highlight=False, markup=False)
        return
    out.print(_studies_table(df, where))


def _studies_table(df, where: str) -> Table:
    import pandas as pd

    many = df["storage"].nunique() > 1
    counts = ["complete", "pruned", "fail", "running", "waiting", "front"]
    t = Table(title=f"studies in {where}")
    for col in ["study", "space", "task", "trials", *counts, *(["storage"] if many else [])]:
        t.add_column(col, justify="right" if col in counts or col == "trials" else "left", overflow="fold")
    for r in df.to_dict("records"):
        r = {k: None if pd.isna(v) else v for k, v in r.items()}
        budget = "?" if r["budget"] is None else int(r["budget"])
        t.add_row(r["study"], r["space"] or f"({r['note']})", r["task"] or "", f"{r['finished']}/{budget}",
                  *(str(r[c]) for c in counts), *([r["storage"]] if many else []))
    return t


@app.command()
@user_errors
def delete(study: str = StudyOpt, storage: Optional[str] = StorageOpt,
           yes: bool = typer.Option(False, "--yes", "-y", help="delete without asking")):
    """Delete a study and all its trials from its storage (asks first unless --yes). Refused while a
    search still runs one of its trials. The database file itself is left in place."""
    from nas.store.study import delete_study, study_summary

    url = storage_for(study, storage)
    summary = study_summary(url, study)
    if not yes:
        try:
            sure = typer.confirm(f"delete study {study!r} from {url} ({summary})?", default=False, err=True)
        except typer.Abort:  # end of input: no answer is no
            sure = False
        if not sure:
            err.print("nothing deleted", highlight=False)
            raise typer.Exit(1)
    delete_study(url, study)
    err.print(f"deleted study {study!r} ({summary}) from {url}", highlight=False, markup=False)
