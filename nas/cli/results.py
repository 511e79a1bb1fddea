"""`nas status`, `nas pareto`, `nas export`, `nas show`: reading a study."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from nas.cli.base import StorageOpt, StudyOpt, app, err, out, storage_for, user_errors
from nas.cli.tables import front_counts, front_table, model_summary
from nas.errors import UserError


@app.command()
@user_errors
def status(study: str = StudyOpt, storage: Optional[str] = StorageOpt):
    """Trials by state, budget, trials lost to a dead process, front size, best value per
    objective, environment (fronts, bests and hypervolume count only trials that satisfy the
    space's constraints)."""
    from nas.engine.budget import lost_summary
    from nas.results.trials import feasible_complete, load_trials, pareto_front
    from nas.store.optuna_access import storage_of
    from nas.store.study import ENV_ATTR, budget_count, load_study

    url = storage_for(study, storage)
    st, config = load_study(url, study)
    df = load_trials(storage_of(st), study)
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
    t.add_row("front size", f"{len(front)} ({front_counts(df, front)})")
    if len(front):
        from nas.results.volume import hypervolume, reference_point

        ref = reference_point(df)
        t.add_row("hypervolume", f"{hypervolume(df):.4g} (reference {', '.join(f'{k}={v:.4g}' for k, v in ref.items())})")
    for o, d in df.attrs["objectives"].items():
        col = feasible_complete(df)[o].dropna()
        if len(col):
            best = col.max() if d == "maximize" else col.min()
            t.add_row(f"best {o} ({d})", f"{best:.4g}")
    env = st.user_attrs.get(ENV_ATTR) or {}
    t.add_row("environment", ", ".join(f"{k}={v}" for k, v in env.items()))
    out.print(t)


@app.command()
@user_errors
def pareto(
    study: str = StudyOpt,
    storage: Optional[str] = StorageOpt,
    format: str = typer.Option("table", "--format", help="table | csv | json"),
):
    """The Pareto front of a study."""
    from nas.results.trials import load_trials, pareto_front

    if format not in ("table", "csv", "json"):
        raise UserError(f"--format: {format!r} is not one of ['table', 'csv', 'json']")
    df = load_trials(storage_for(study, storage), study)
    if format == "table":
        out.print(front_table(df))
        return
    front = pareto_front(df)
    cols = dict.fromkeys(["number", "arch_id", *df.attrs["objectives"], "params", "flops", "latency_spread", "summary"])
    front = front[[c for c in cols if c in front.columns]]  # an objective such as params is listed once
    if format == "csv":
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
         model: bool = typer.Option(True, "--model/--no-model", help="build the model and list its blocks' "
                                                                  "parameters (imports torch)")):
    """One trial: its metrics, its architecture as JSON, and a summary of the built model."""
    from nas.results.trials import load_trials
    from nas.store.optuna_access import storage_of
    from nas.store.study import load_study
    from search_spaces import ArchSpec

    st, config = load_study(storage_for(study, storage), study)
    df = load_trials(storage_of(st), study)
    rows = df[df["number"] == trial]
    if rows.empty:
        raise UserError(f"study {study!r} has no trial {trial}; trials are 0..{len(df) - 1}")
    r = rows.iloc[0]
    if not r.get("arch_json"):
        raise UserError(f"trial {trial} has no architecture (state {r['state']}: {r.get('error')})")
    arch = ArchSpec.from_json(r["arch_json"])
    out.print(f"[bold]trial {trial}[/] {r['state']}  arch_id {arch.arch_id}", highlight=False)
    if r.get("error"):
        out.print(f"error: {r['error']}", highlight=False, markup=False)
    metrics = {k: r[k] for k in ("accuracy", "latency_ms", "latency_spread", "params", "flops", "train_loss_sum")
               if k in r and r[k] == r[k] and r[k] is not None}
    if metrics:
        out.print("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()), highlight=False)
    out.print_json(json.dumps(arch.to_dict()))
    if model:
        out.print(model_summary(arch, config))
