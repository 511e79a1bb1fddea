"""`nas profile`: fill the block latency tables of a study's storage up front; and the latency part
of `nas fidelity --latency` (predicted against measured latency)."""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from nas.cli.base import PluginOpt, app, err, user_errors
from nas.cli.options import checked_option
from nas.errors import UserError
from search_spaces.schema import Check

__all__ = ["latency_fidelity", "selected_profiles"]

PROFILE_N = Check(int, low=1)
TASK_SHAPE = "task shape"  # the label of the implicit profile (the unsuffixed latency_ms)


def selected_profiles(space, names: List[str]) -> dict:
    """``{label: Profile}``: the space's ``deploy:`` profiles named in ``names``, or, when none are
    named, every one of them and the task's shape (the profile of the unsuffixed ``latency_ms``).
    UserError for a name the space does not declare."""
    from evaluators.latency import LatencyConfig
    from evaluators.profile_costs import task_profile

    for name in names:
        if name not in space.profiles:
            raise UserError(f"--profile: {name!r} is not a profile of space {space.name!r} (its deploy: section "
                            f"declares {list(space.profiles) or 'none'})")
    if names:
        return {name: space.profiles[name] for name in dict.fromkeys(names)}
    return {TASK_SHAPE: task_profile(space.io, LatencyConfig.from_dict(space.latency)), **space.profiles}


def _table_url(study: Optional[str], storage: Optional[str]) -> str:
    from nas.engine.config import check_study_name, default_storage

    if storage is None and study is None:
        raise UserError("give --study NAME (the tables go to its storage, sqlite:///results/<study>.db) or --storage URL")
    if study is not None:
        check_study_name(study, file_name=storage is None)
    return storage or default_storage(study)


def _load(space: str, plugin: List[str]):
    from nas.engine.config import check_runs_here, load_checked
    from nas.engine.study_plugins import load_cli_plugins

    load_cli_plugins(plugin)
    checked = load_checked(space)
    check_runs_here(checked)
    return checked.space


@app.command()
@user_errors
def profile(
    space: str = typer.Option(..., "--space", help="built-in space name or path to a space YAML file"),
    profiles: List[str] = typer.Option([], "--profile", help="a deploy: profile of the space (repeatable) "
                                                            "[default: every profile and the task's shape]"),
    n: int = checked_option(20, "--n", check=PROFILE_N, help="architectures to sample; their parts are timed"),
    study: Optional[str] = typer.Option(None, "--study", help="the study whose storage keeps the tables"),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL [default: sqlite:///results/<study>.db]"),
    seed: int = typer.Option(0, "--seed", help="seeds the architecture sample and the random weights"),
    plugin: List[str] = PluginOpt,
):
    """Sample N architectures of a space and time each of their parts (stem, blocks, transitions,
    readout) in place, within its model's run, at each profile, filling the block latency table in
    the study's storage that `predict` ladder rungs and `measure: predict` profiles read. An
    architecture whose model at a profile would not fit in this machine's memory is skipped there."""
    from evaluators.errors import TooLarge
    from evaluators.fidelity import sample_archs
    from evaluators.latency import LatencyConfig
    from evaluators.predictor import Predictor, environment_key
    from nas.store.latency_tables import open_latency_table

    sp = _load(space, plugin)
    chosen = selected_profiles(sp, profiles)
    url = _table_url(study, storage)
    table = open_latency_table(url)
    predictor = Predictor(table, LatencyConfig.from_dict(sp.latency), seed=seed)
    archs = sample_archs(sp, n, seed)
    err.print(f"profiling {len(archs)} architectures of space {sp.name} at {', '.join(chosen)} into {url}",
              highlight=False)
    for label, prof in chosen.items():
        t0, timed = time.perf_counter(), 0
        for i, arch in enumerate(archs):
            try:
                pred = predictor.predict(arch, sp.io, prof)
            except TooLarge as e:
                err.print(f"[{label} {i + 1}/{len(archs)}] {arch.arch_id} skipped: {e} | {arch.summary()}",
                          highlight=False, markup=False)
                continue
            timed += pred.timed
            err.print(f"[{label} {i + 1}/{len(archs)}] {arch.arch_id} {pred.ms:.4g} ms predicted; "
                      f"{pred.timed} of {len(pred.parts)} parts timed now | {arch.summary()}", highlight=False,
                      markup=False)
        print(f"{label}: {timed} parts timed in {time.perf_counter() - t0:.1f}s; the table holds "
              f"{table.count(environment_key(prof))} parts for this environment ({environment_key(prof)})")


def latency_fidelity(space, n: int, seed: int, out_dir: Optional[Path], profiles: List[str],
                     storage: Optional[str], machine: str) -> None:
    """`nas fidelity --latency`: predicted (block tables; from ``storage``'s table when given, else
    one filled by this run) against measured latency of N sampled architectures at each profile."""
    from evaluators.fidelity import sample_archs
    from evaluators.latency import LatencyConfig
    from evaluators.latency_fidelity import agreement, compare, to_markdown
    from evaluators.predictor import MemoryTable, Predictor
    from nas.store.latency_tables import open_latency_table

    chosen = selected_profiles(space, profiles)
    out_dir = out_dir or Path("results") / f"latency-fidelity-{space.name}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out: cannot create {out_dir}: {e.strerror}") from None
    latency = LatencyConfig.from_dict(space.latency)
    table = open_latency_table(storage) if storage else MemoryTable()
    started = datetime.datetime.now()
    err.print(f"latency fidelity of space {space.name}: {n} architectures at {', '.join(chosen)}, seed {seed}",
              highlight=False)
    df = compare(sample_archs(space, n, seed), space.io, chosen, Predictor(table, latency, seed=seed), latency,
                 seed=seed, log=lambda m: print(m, file=sys.stderr, flush=True))
    if df.empty:
        raise UserError(f"no architecture of the {n} sampled fits this machine's memory at {', '.join(chosen)}")
    agree = agreement(df)
    minutes = (datetime.datetime.now() - started).total_seconds() / 60
    header = (f"# Latency predictor fidelity: space `{space.name}`\n\n- command: `nas {' '.join(sys.argv[1:])}`\n"
              f"- date: {started:%Y-%m-%d %H:%M} ({minutes:.1f} min)\n- machine: {machine}\n"
              f"- table: {storage or 'in memory, filled by this run'}\n")
    df.to_csv(out_dir / "latency.csv", index=False)
    agree.to_csv(out_dir / "latency_agreement.csv", index=False)
    (out_dir / "latency.md").write_text(to_markdown(df, agree, header=header))
    for _, r in agree.iterrows():
        print(f"{r['profile']:<12} {r['group']:<10} n {r['n']:>3}  tau {r['tau']:+.3f}  median rel err "
              f"{r['rel_err_median']:.1%}  p90 {r['rel_err_p90']:.1%}")
    err.print(f"wrote {out_dir}/latency.md, latency.csv, latency_agreement.csv", highlight=False)
