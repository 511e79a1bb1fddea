"""`nas plot`, `nas report`, `nas compare`: pictures and reports of studies."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from nas.cli.base import StorageOpt, StudyOpt, app, err, out, storage_for, user_errors
from nas.cli.tables import confirmed_note, front_counts
from nas.errors import UserError

FIGURE_SUFFIXES = (".png", ".svg", ".pdf", ".html")


def _out_suffix(path: Path) -> str:
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise UserError(f"--out: {path} must end in one of {', '.join(FIGURE_SUFFIXES)}")
    return path.suffix.lower()


def _write_plot(path: Path, html: Optional[str] = None, fig=None):
    from nas.results.plots import write_figure

    path.parent.mkdir(parents=True, exist_ok=True)
    if html is not None:
        path.write_text(html, encoding="utf-8")
    else:
        write_figure(fig, path)


@app.command()
@user_errors
def plot(
    study: str = StudyOpt,
    storage: Optional[str] = StorageOpt,
    out_path: Path = typer.Option(..., "--out", help="FILE.png | FILE.svg | FILE.pdf (matplotlib) or FILE.html (interactive, plotly)"),
    x: Optional[str] = typer.Option(None, "--x", help="column on the x axis [default: the first objective]"),
    y: Optional[str] = typer.Option(None, "--y", help="column on the y axis [default: the second objective]"),
    color: str = typer.Option("arch.family", "--color", help="column that colours the points ('' for none)"),
):
    """Every trial on two objectives with the Pareto front; one panel per pair with 3+ objectives."""
    from nas.results import plots
    from nas.results.trials import load_trials

    suffix = _out_suffix(out_path)
    df = load_trials(storage_for(study, storage), study)
    if not (df["state"] == "COMPLETE").any():
        raise UserError(f"study {study!r} has no complete trials to plot yet")
    pairs = plots.axes_pairs(df, x, y)
    if suffix == ".html":
        _write_plot(out_path, html=plots.front_html(df, pairs, color or None))
    else:
        _write_plot(out_path, fig=plots.front_figure(df, pairs, color or None))
    err.print(f"wrote {out_path} ({len(pairs)} panel{'s' if len(pairs) > 1 else ''}, {len(df)} trials)", highlight=False)


@app.command()
@user_errors
def report(
    study: str = StudyOpt,
    storage: Optional[str] = StorageOpt,
    out_dir: Path = typer.Option(..., "--out", help="directory for report.html, report.md and figures"),
):
    """A self-contained HTML report (and a markdown twin): config, progress, front, architectures."""
    from nas.results.report import write_report
    from nas.results.trials import trials_frame
    from nas.store.study import ENV_ATTR, load_study

    url = storage_for(study, storage)
    st, _config = load_study(url, study)
    df = trials_frame(st)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out: {out_dir} exists and is not a directory")
    paths = write_report(df, out_dir, environment=st.user_attrs.get(ENV_ATTR) or {}, storage=url)
    err.print(f"wrote {paths['html']} and {paths['md']}", highlight=False)


def _storages(studies: List[str], storages: Optional[List[str]]) -> List[str]:
    storages = storages or []
    if len(storages) == 0:
        return [storage_for(s, None) for s in studies]
    if len(storages) == 1:
        return storages * len(studies)
    if len(storages) == len(studies):
        return storages
    raise UserError(f"--storage: give none (each study's default file), one (shared) or one per --study "
                    f"({len(studies)}); got {len(storages)}")


@app.command()
@user_errors
def compare(
    study: List[str] = typer.Option(..., "--study", help="study name; repeat for each study (at least two)"),
    storage: Optional[List[str]] = typer.Option(None, "--storage", help="storage URL: one shared, or one per --study in the same order (default: $NAS_STORAGE if set, else sqlite:///results/<study>.db each)"),
    out_path: Optional[Path] = typer.Option(None, "--out", help="also plot the fronts together: FILE.png | FILE.html"),
):
    """Fronts of several studies side by side, with hypervolumes against one common reference point
    (only trials that satisfy each study's constraints and beat its floors count; confirmed values
    where `nas confirm` measured them, and each study says how many)."""
    from nas.results import plots

    if len(study) < 2:
        raise UserError("--study: give at least two studies to compare")
    if len(set(study)) != len(study) and not storage:
        raise UserError("--study: the same study twice; give a --storage for each to compare copies")
    suffix = _out_suffix(out_path) if out_path else None
    dfs = _load_studies(study, _storages(study, storage))
    objectives = next(iter(dfs.values())).attrs["objectives"]
    ref, hvs = _common_hypervolumes(dfs, objectives)
    out.print("common reference point: " + ", ".join(f"{k}={v:.4g}" for k, v in ref.items())
              + " (worst feasible complete value of all studies, moved by 10% of the range)", highlight=False)
    for name, df in dfs.items():
        out.print(front_table(name, df, objectives, hvs[name]))
        note = confirmed_note(df)
        if note:
            out.print(f"{name}: {note}", highlight=False, markup=False)
    best = max(hvs, key=hvs.get)
    out.print(f"largest hypervolume: {best} ({hvs[best]:.4g})", highlight=False)
    if out_path:
        pairs = plots.axes_pairs(next(iter(dfs.values())))
        if suffix == ".html":
            _write_plot(out_path, html=plots.compare_html(dfs, pairs, hvs))
        else:
            _write_plot(out_path, fig=plots.compare_figure(dfs, pairs, hvs))
        err.print(f"wrote {out_path}", highlight=False)


def _load_studies(studies: List[str], urls: List[str]) -> dict:
    """The trials of each study (a study named twice is told apart by its storage); they must
    optimize the same objectives."""
    from nas.results.trials import load_trials

    dfs = {}
    for name, url in zip(studies, urls):
        key = name if name not in dfs else f"{name} ({url})"
        dfs[key] = load_trials(url, name)
    first = next(iter(dfs.values())).attrs["objectives"]
    for name, df in dfs.items():
        if df.attrs["objectives"] != first:
            raise UserError(f"studies optimize different objectives: {studies[0]} {first} vs {name} "
                            f"{df.attrs['objectives']}")
    return dfs


def _common_hypervolumes(dfs: dict, objectives: dict) -> tuple[dict, dict]:
    """One reference point from the feasible complete trials of all studies, and each study's
    hypervolume against it."""
    import pandas as pd

    from nas.results.trials import feasible_complete
    from nas.results.volume import hypervolume, reference_point

    both = pd.concat([feasible_complete(df, list(objectives))[list(objectives)] for df in dfs.values()],
                     ignore_index=True)
    if both.empty:
        raise UserError("none of the studies has complete trials that satisfy its constraints yet")
    ref = reference_point(both, objectives)
    return ref, {name: hypervolume(df, reference=ref) for name, df in dfs.items()}


def front_table(name: str, df, objectives: dict, hv: float) -> Table:
    from nas.results.trials import pareto_front
    from nas.results.uncertainty import confirmed_mask

    front = pareto_front(df)
    t = Table(title=f"{name}: front of {front_counts(df, front)}, hypervolume {hv:.4g}")
    t.add_column("trial", justify="right")
    for o, d in objectives.items():
        t.add_column(f"{o} {'↑' if d == 'maximize' else '↓'}", justify="right")
    t.add_column("p_front", justify="right")
    t.add_column("architecture", overflow="fold")
    for (_, r), confirmed in zip(front.iterrows(), confirmed_mask(front)):
        tag = f"[{r['baseline']}] " if isinstance(r.get("baseline"), str) else ""
        tag += "(confirmed) " if confirmed else ""
        t.add_row(str(int(r["number"])), *[f"{r[o]:.4g}" for o in objectives], f"{r['p_front']:.2f}",
                  escape(tag + str(r.get("summary", ""))))
    return t
