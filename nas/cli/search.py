"""`nas spaces`, `nas search`, `nas resume`: what can be searched, and searching it."""

from __future__ import annotations

import logging
import textwrap
from typing import List, Optional

import typer
from rich.table import Table

from nas.api import SearchStopped
from nas.cli.base import PluginOpt, StorageOpt, StudyOpt, TrustCodeOpt, app, err, out, state, user_errors
from nas.cli.options import CPUS_PER_TRIAL, GPUS_PER_TRIAL, checked_option
from nas.cli.tables import front_table
from nas.engine.config import SAMPLERS, SearchConfig
from nas.engine.logs import QUIET
from nas.errors import UserError
from search_spaces.schema import check_of


@app.command()
@user_errors
def spaces():
    """List the built-in search spaces: task, mixers, number of architectures."""
    import search_spaces

    t = Table(title="built-in spaces")
    for col in ("space", "task", "mixers", "architectures", "trials", "description"):
        t.add_column(col, overflow="fold")
    for name in search_spaces.list_spaces():  # parsed and counted, not bound to a task: no torch needed
        s = search_spaces.load_space(name)
        n, exact = s.count()
        t.add_row(name, s.task.name, ", ".join(s.mixer_names()), f"{'' if exact else '<= '}{n:,}", str(s.trials),
                  textwrap.shorten(s.description, 100, placeholder=" ..."))
    out.print(t)


def progress_for(total: int):
    """The progress of `nas search` / `nas resume` / `nas confirm`: a live line on a terminal, plain
    lines otherwise; under -q none (the lines go to the logger, which keeps errors only)."""
    from nas.engine.progress import LogProgress, Progress

    return LogProgress(total, logging.getLogger("nas")) if state["verbosity"] == QUIET else Progress(total, err)


def _print_summary(df) -> None:
    """The front as a table, then one line: trials finished by state, and the storage (a stop
    meanwhile still says how to resume)."""
    finished, budget, url = df.attrs["finished"], df.attrs["config"]["trials"], df.attrs["storage"]
    try:
        out.print(front_table(df))
        counts = df["state"].value_counts().to_dict()
        err.print(f"study {df.attrs['study']}: {finished}/{budget} trials finished "
                  f"({', '.join(f'{v} {k.lower()}' for k, v in sorted(counts.items()))}); storage {url}", highlight=False)
    except KeyboardInterrupt as e:
        raise SearchStopped.after(e, study=df.attrs["study"], storage=url, finished=finished, budget=budget) from None


def _print_dry_run(config, sp) -> None:
    """What `nas search` would run; everything has been checked, nothing written."""
    n, exact = sp.count()
    count = f"{n:,}" if n < 10**15 else f"about 10^{int(n.bit_length() * 0.30103)}"
    err.print(f"ok: space {sp.source} (task {sp.task.name}, {'' if exact else '<= '}{count} architectures), "
              f"study {config.study} in {config.storage}, {config.trials} trials, sampler {config.sampler}, "
              f"backend {config.backend}; nothing written (--dry-run)", highlight=False, markup=False)


@app.command()
@user_errors
def search(
    space: str = typer.Option("tiny", "--space", help="built-in space name or path to a space YAML file"),
    study: Optional[str] = typer.Option(None, "--study", help="study name [default: the space's name]"),
    storage: Optional[str] = StorageOpt,
    trials: Optional[int] = checked_option(None, "--trials", check=check_of(SearchConfig, "trials"), help="total finished trials the study should reach (default: the space's)"),
    backend: str = typer.Option("local", "--backend", help="local | ray"),
    workers: int = checked_option(1, "--workers", check=check_of(SearchConfig, "workers"), help="parallel workers (ray backend)"),
    sampler: str = typer.Option(SAMPLERS[0], "--sampler", help=" | ".join(SAMPLERS)),
    seed: int = typer.Option(0, "--seed"),
    timeout: Optional[float] = checked_option(None, "--timeout", check=check_of(SearchConfig, "timeout"), help="stop starting new trials after this many seconds"),
    heartbeat: int = checked_option(5, "--heartbeat", check=check_of(SearchConfig, "heartbeat_interval"), help="seconds between trial heartbeats; a trial silent for 4x this is stale and retried"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="ray backend: Ray cluster to join (e.g. auto, HOST:6379) [default: start a local Ray]"),
    cpus_per_trial: float = checked_option(1.0, "--cpus-per-trial", check=CPUS_PER_TRIAL, help="ray backend: CPUs (and torch threads) per trial"),
    gpus_per_trial: float = checked_option(0.0, "--gpus-per-trial", check=GPUS_PER_TRIAL, help="ray backend: GPUs per trial"),
    early_stop: bool = typer.Option(True, "--early-stop/--no-early-stop", help="ray backend: ASHA stops weak candidates (see docs/ray.md)"),
    latency_lock: str = typer.Option("rw", "--latency-lock", help="ray backend: rw (training pauses while a latency is timed) | mutex (timings one at a time, training goes on) | none"),
    baselines: bool = typer.Option(False, "--baselines", help="also evaluate literature reference designs sized to the space (marked in results)"),
    plugin: List[str] = PluginOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="check the space file and the options (and that the "
                                 "space's models fit this machine), print what would run, write nothing"),
):
    """Search a space: sample, train proxies, time, store every trial, print the Pareto front."""
    from nas.api import plan_search
    from nas.api import search as run_search
    from nas.engine.device_lock import MODES

    if latency_lock not in MODES:
        raise UserError(f"--latency-lock: {latency_lock!r} is not one of {list(MODES)}")
    options = {"ray_address": ray_address, "cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus_per_trial,
               "asha": early_stop, "latency_lock": latency_lock} if backend == "ray" else {}
    kw = dict(study=study, storage=storage, trials=trials, backend=backend, workers=workers, seed=seed,
              sampler=sampler, plugins=plugin, timeout=timeout, heartbeat=heartbeat, options=options)
    if dry_run:
        plan = plan_search(space, **kw)
        _print_dry_run(plan.config, plan.space)
        return
    _print_summary(run_search(space, **kw, baselines=baselines, progress=progress_for))


@app.command()
@user_errors
def resume(
    study: str = StudyOpt,
    storage: Optional[str] = StorageOpt,
    trials: Optional[int] = checked_option(None, "--trials", check=check_of(SearchConfig, "trials"), help="new total of finished trials"),
    timeout: Optional[float] = checked_option(None, "--timeout", check=check_of(SearchConfig, "timeout"), help="stop starting new trials after this many seconds"),
    trust_code: bool = TrustCodeOpt,
):
    """Continue a study from its storage; the stored config says everything else."""
    from nas.api import resume as run_resume

    _print_summary(run_resume(study, storage=storage, trials=trials, timeout=timeout, progress=progress_for,
                              trust_code=trust_code))
