"""`nas status`, `nas pareto`, `nas export`, `nas show`: reading a study."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from nas.cli.base import StorageOpt, StudyOpt, TrustCodeOpt, app, err, out, storage_for, user_errors
from nas.cli.tables import confirmed_note, front_counts, front_table, goal_lines, model_summary
from nas.errors import UserError


@app.command()
@user_errors
def status(study: str = StudyOpt, storage: Optional[str] = StorageOpt):
    """Trials by state, budget, trials lost to a dead process, front size and how much of it is resolved, best value per
    objective, environment (fronts, bests and hypervolume count only trials that satisfy the
    space's constraints and beat its floors; confirmed values where `nas confirm` measured them)."""
    import pandas as pd

    from nas.engine.budget import lost_summary
    from nas.results.floors import floor_text, floors_of
    from nas.results.trials import feasible_complete, pareto_front, trials_frame
    from nas.results.uncertainty import confirmed_mask
    from nas.store.study import ENV_ATTR, budget_count, load_study

    url = storage_for(study, storage)
    st, config = load_study(url, study)
    df = trials_frame(st)
    t = Table(title=f"study {study}", show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value", overflow="fold")
    t.add_row("storage", url)
    t.add_row("space", f"{config.space} (task {config.task().name})")
    t.add_row("sampler / seed", f"{config.sampler} / {config.seed}")
    t.add_row("budget", f"{budget_count(st)}/{config.trials} finished")
    for state, n in sorted(df["state"].value_counts().items()):
        t.add_row(f"  {state.lower()}", str(n))
    lost = lost_summary(st.get_trials(deepcopy=False), config.max_retry)
    if lost:
        t.add_row("lost", lost)
    front = pareto_front(df)
    if df.attrs.get("constraints"):
        t.add_row("constraints", ", ".join(df.attrs["constraints"]))
    if floors_of(df):
        t.add_row("floors", floor_text(floors_of(df)))
    t.add_row("front size", f"{len(front)} ({front_counts(df, front)})")
    if len(front):
        from nas.results.volume import hypervolume, reference_point

        t.add_row("front resolved", _resolved_text(front))
        ref = reference_point(df)
        t.add_row("hypervolume", f"{hypervolume(df):.4g} (reference {', '.join(f'{k}={v:.4g}' for k, v in ref.items())})")
    note = confirmed_note(df)
    if note:
        t.add_row("confirmed", note)
    sure = pd.Series(confirmed_mask(df), index=df.index)
    for o, d in df.attrs["objectives"].items():
        col = feasible_complete(df)[o].dropna()
        if len(col):
            at = col.idxmax() if d == "maximize" else col.idxmin()
            t.add_row(f"best {o} ({d})", f"{col[at]:.4g}" + (" (confirmed)" if sure[at] else ""))
    env = st.user_attrs.get(ENV_ATTR) or {}
    t.add_row("environment", ", ".join(f"{k}={v}" for k, v in env.items()))
    out.print(t)


RESOLVED_P = 0.9  # a member with p_front at least this is called resolved by `nas status`


def _resolved_text(front) -> str:
    """'3 of 5 members have p_front >= 0.9; 2 unresolved against another trial (nas pareto lists them)'."""
    sure = int((front["p_front"] >= RESOLVED_P).sum())
    open_ = int(front["unresolved_with"].map(lambda v: bool(v) if isinstance(v, list) else False).sum())
    text = f"{sure} of {len(front)} members have p_front >= {RESOLVED_P:g}"
    return text + (f"; {open_} unresolved against another trial (nas pareto lists them)" if open_ else "")


@app.command()
@user_errors
def pareto(
    study: str = StudyOpt,
    storage: Optional[str] = StorageOpt,
    format: str = typer.Option("table", "--format", help="table | csv | json"),
):
    """The Pareto front of a study."""
    from nas.results.trials import load_trials, pareto_front
    from nas.results.uncertainty import confirmed_mask

    if format not in ("table", "csv", "json"):
        raise UserError(f"--format: {format!r} is not one of ['table', 'csv', 'json']")
    df = load_trials(storage_for(study, storage), study)
    if format == "table":
        out.print(front_table(df))
        return
    front = pareto_front(df)
    confirmed = ["confirmed"] if confirmed_mask(df).any() else []  # the column only once `nas confirm` ran
    cols = dict.fromkeys(["number", "arch_id", *df.attrs["objectives"], "params", "flops", "latency_spread", "summary",
                          "p_front", "unresolved_with", *confirmed])
    front = front[[c for c in cols if c in front.columns]]  # an objective such as params is listed once
    if format == "csv":
        front = front.assign(unresolved_with=front["unresolved_with"].map(lambda v: " ".join(map(str, v))))
        sys.stdout.write(front.to_csv(index=False))
    else:
        sys.stdout.write(front.to_json(orient="records", indent=2) + "\n")


@app.command()
@user_errors
def export(study: str = StudyOpt, storage: Optional[str] = StorageOpt,
           out_path: Path = typer.Option(..., "--out", help="FILE.csv or FILE.parquet")):
    """Every trial as a table file (.csv or .parquet) that keeps the objectives, constraints and
    config: parquet in its metadata, CSV in a FILE.csv.meta.json beside it. Read back with
    nas.load_trials(FILE)."""
    from nas.results.files import write_export
    from nas.results.trials import load_trials

    if out_path.suffix not in (".csv", ".parquet"):
        raise UserError(f"--out: {out_path} must end in .csv or .parquet")
    df = load_trials(storage_for(study, storage), study)
    written = write_export(df, out_path)
    err.print(f"wrote {len(df)} trials to {' and '.join(map(str, written))}", highlight=False)


@app.command()
@user_errors
def show(study: str = StudyOpt, storage: Optional[str] = StorageOpt,
         trial: int = typer.Option(..., "--trial", help="trial number"),
         model: Optional[bool] = typer.Option(None, "--model/--no-model", show_default=False,
                                              help="build the model and list its blocks' parameters (imports torch; "
                                                   "needs the study's plugins). Default: on, and left out with a note "
                                                   "when they cannot be loaded; --model makes that an error"),
         trust_code: bool = TrustCodeOpt):
    """One trial: the study's objectives and constraints, every metric the trial stored, its
    architecture as JSON, and a summary of the built model (the one part that needs the study's
    plugins, and --trust-code for plugin code that is not on this machine)."""
    from nas.results.trials import trials_frame
    from nas.store.study import load_study
    from search_spaces import ArchSpec

    st, config = load_study(storage_for(study, storage), study)
    df = trials_frame(st)
    rows = df[df["number"] == trial]
    if rows.empty:
        raise UserError(f"study {study!r} has no trial {trial}; trials are 0..{len(df) - 1}")
    r = rows.iloc[0]
    if not r.get("arch_json"):
        raise UserError(f"trial {trial} has no architecture (state {r['state']}: {r.get('error')})")
    arch = ArchSpec.from_json(r["arch_json"])
    out.print(f"[bold]trial {trial}[/] {r['state']}  arch_id {arch.arch_id}", highlight=False)
    if isinstance(r.get("error"), str):  # NaN where other trials have one
        out.print(f"error: {r['error']}", highlight=False, markup=False)
    frozen = next(t for t in st.get_trials(deepcopy=False) if t.number == trial)
    for line in goal_lines(frozen, df.attrs["objectives"], config.space_yaml):
        out.print(line, highlight=False, markup=False)
    out.print_json(json.dumps(arch.to_dict()))
    if model is not False:
        _print_model_summary(arch, config, asked=model is True, trust_code=trust_code)


def _print_model_summary(arch, config, *, asked: bool, trust_code: bool) -> None:
    """The model summary of `nas show`, the one part that loads the study's plugins: when they cannot
    be loaded or are not trusted, a note on stderr (exit 0), or the error (exit 2) with ``asked``
    (--model given)."""
    try:
        space = config.load_space(trust_code=trust_code)
    except UserError as e:
        if asked:
            raise
        err.print(f"note: no model summary: {e}", highlight=False, markup=False)
        return
    out.print(model_summary(arch, space.io))
