"""`nas delete`: remove a study from its storage (e.g. one whose creation a kill interrupted)."""

from __future__ import annotations

from typing import Optional

import typer

from nas.cli import StorageOpt, StudyOpt, _storage, app, err, user_errors


@app.command()
@user_errors
def delete(study: str = StudyOpt, storage: Optional[str] = StorageOpt,
           yes: bool = typer.Option(False, "--yes", "-y", help="delete without asking")):
    """Delete a study and all its trials from its storage (asks first unless --yes). Refused while a
    search still runs one of its trials. The database file itself is left in place."""
    from nas.study import delete_study, study_summary

    url = _storage(study, storage)
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
