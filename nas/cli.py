"""The `nas` command line (its commands are listed in README.md; docs/architecture.md says how a
command reaches the study)."""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import textwrap
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nas import interrupts
from nas.api import SearchStopped
from nas.config import SAMPLERS, SearchConfig, resolve_storage
from nas.errors import UserError
from nas.logs import NORMAL, QUIET, VERBOSE, configure
from nas.options import CPUS_PER_TRIAL, GPUS_PER_TRIAL, checked_option
from search_spaces.schema import check_of

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Neural architecture search for efficient transformer token mixers.")
out = Console(width=None if sys.stdout.isatty() else 160)  # pipes and logs get wide tables
err = Console(stderr=True, soft_wrap=True)  # never break a command the user may copy; silent under -q
err_always = Console(stderr=True, soft_wrap=True)  # errors and the end of a stopped search, also under -q
state = {"verbosity": NORMAL}  # set by the global options -q / -v

StudyOpt = typer.Option(..., "--study", help="study name")
StorageOpt = typer.Option(None, "--storage", help="Optuna storage URL (default: $NAS_STORAGE if set, else "
                                                   "sqlite:///results/<study>.db)")
PluginOpt = typer.Option([], "--plugin", help="module name or .py file that registers mixers, tasks or metrics "
                                              "(repeatable; a study stores its plugins)")


def _fail(msg: str, code: int = 2):
    err_always.print(f"error: {msg}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(code)


def user_errors(fn):
    """Run a command with stop signals handled (nas/interrupts.py). A user error or a database
    problem (damaged, read-only, locked) ends in one line and exit code 2; Ctrl-C, SIGTERM or SIGHUP
    in one line and exit code 128 + the signal's number. Never a traceback."""

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            with interrupts.handling():
                return fn(*a, **kw)
        except UserError as e:
            _fail(str(e))
        except SearchStopped as e:  # the search saved its trials and says how to resume
            err_always.print(f"\n{e}", highlight=False, markup=False)
            raise typer.Exit(128 + e.signum) from None
        except KeyboardInterrupt as e:
            n = interrupts.signal_number(e)
            err_always.print("interrupted" if n == signal.SIGINT else f"terminated by {interrupts.describe(e)}",
                             highlight=False)
            raise typer.Exit(128 + n) from None
        except Exception as e:
            from nas.storage_errors import storage_problem
            from search_spaces.registries import UnknownName

            if isinstance(e, UnknownName):  # e.g. a mixer of a plugin that was not loaded
                _fail(str(e))
            problem = storage_problem(e, kw.get("storage") if isinstance(kw.get("storage"), str) else None)
            if problem is None:
                raise
            _fail(problem)

    return wrapper


def _storage(study: str, storage: Optional[str]) -> str:
    """--storage, else $NAS_STORAGE, else sqlite:///results/<study>.db (nas.config.resolve_storage)."""
    return resolve_storage(study, storage)


def _print_version(value: bool) -> None:
    if value:
        import nas

        out.print(f"mixer-nas {nas.__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def global_options(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="print the version (from the installed package) and exit"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print errors and the final result only"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="also print debug messages and Optuna's log lines"),
):
    if quiet and verbose:
        raise typer.BadParameter("-q/--quiet and -v/--verbose exclude each other")
    state["verbosity"] = QUIET if quiet else VERBOSE if verbose else NORMAL
    err.quiet = quiet
    configure(state["verbosity"], lambda line: err_always.print(line, highlight=False, markup=False))


# ------------------------------------------------------------------------------ spaces
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


# ------------------------------------------------------------------------------ search / resume
def _front_counts(df, front) -> str:
    """'3 of 7 complete trials', and how many of those violate a constraint when any do."""
    from nas.results import feasible_complete

    complete = int((df["state"] == "COMPLETE").sum())
    infeasible = complete - len(feasible_complete(df))
    if not infeasible:
        return f"{len(front)} of {complete} complete trials"
    return f"{len(front)} of {complete - infeasible} feasible complete trials; {infeasible} violate a constraint"


def _front_table(df, title="Pareto front") -> Table:
    from nas.results import pareto_front

    front = pareto_front(df)
    objs = list(df.attrs["objectives"])
    t = Table(title=f"{title} ({_front_counts(df, front)})")
    t.add_column("trial", justify="right")
    for o in objs:
        arrow = "↑" if df.attrs["objectives"][o] == "maximize" else "↓"
        t.add_column(f"{o} {arrow}", justify="right")
    extra = ("arch_id", "architecture") if "params" in objs else ("params", "arch_id", "architecture")
    for col in extra:  # params once, also when it is an objective
        t.add_column(col, justify="right" if col == "params" else "left", overflow="fold")
    for _, r in front.iterrows():
        cells = [str(int(r["number"]))] + [f"{r[o]:.4g}" for o in objs]
        if "params" not in objs:
            cells.append(f"{int(r['params']):,}" if "params" in r and r["params"] == r["params"] else "")
        cells += [str(r.get("arch_id", "")),
                  escape((f"[{r['baseline']}] " if isinstance(r.get("baseline"), str) else "") + str(r.get("summary", "")))]
        t.add_row(*cells)
    return t


def _progress(total: int):
    """The progress of `nas search` / `nas resume`: a live line on a terminal, plain lines
    otherwise; under -q none (the lines go to the logger, which keeps errors only)."""
    from nas.progress import LogProgress, Progress

    return LogProgress(total, logging.getLogger("nas")) if state["verbosity"] == QUIET else Progress(total, err)


def _print_summary(df) -> None:
    """The front as a table, then one line: trials finished by state, and the storage (a stop
    meanwhile still says how to resume)."""
    finished, budget, url = df.attrs["finished"], df.attrs["config"]["trials"], df.attrs["storage"]
    try:
        out.print(_front_table(df))
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
    from nas.locks import MODES

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
    _print_summary(run_search(space, **kw, baselines=baselines, progress=_progress))


@app.command()
@user_errors
def resume(
    study: str = StudyOpt,
    storage: Optional[str] = StorageOpt,
    trials: Optional[int] = checked_option(None, "--trials", check=check_of(SearchConfig, "trials"), help="new total of finished trials"),
    timeout: Optional[float] = checked_option(None, "--timeout", check=check_of(SearchConfig, "timeout"), help="stop starting new trials after this many seconds"),
):
    """Continue a study from its storage; the stored config says everything else."""
    from nas.api import resume as run_resume

    _print_summary(run_resume(study, storage=storage, trials=trials, timeout=timeout, progress=_progress))


# ------------------------------------------------------------------------------ inspection
@app.command()
@user_errors
def status(study: str = StudyOpt, storage: Optional[str] = StorageOpt):
    """Trials by state, budget, front size, best value per objective, environment (fronts, bests
    and hypervolume count only trials that satisfy the space's constraints)."""
    from nas.optuna_access import storage_of
    from nas.results import feasible_complete, load_trials, pareto_front
    from nas.study import ENV_ATTR, budget_count, load_study

    url = _storage(study, storage)
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
    front = pareto_front(df)
    if df.attrs.get("constraints"):
        t.add_row("constraints", ", ".join(df.attrs["constraints"]))
    t.add_row("front size", f"{len(front)} ({_front_counts(df, front)})")
    if len(front):
        from nas.front_volume import hypervolume, reference_point

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
    from nas.results import load_trials, pareto_front

    if format not in ("table", "csv", "json"):
        raise UserError(f"--format: {format!r} is not one of ['table', 'csv', 'json']")
    df = load_trials(_storage(study, storage), study)
    if format == "table":
        out.print(_front_table(df))
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
    from nas.export import write_export
    from nas.results import load_trials

    if out_path.suffix not in (".csv", ".parquet"):
        raise UserError(f"--out: {out_path} must end in .csv or .parquet")
    df = load_trials(_storage(study, storage), study)
    written = write_export(df, out_path)
    err.print(f"wrote {len(df)} trials to {' and '.join(map(str, written))}", highlight=False)


@app.command()
@user_errors
def show(study: str = StudyOpt, storage: Optional[str] = StorageOpt,
         trial: int = typer.Option(..., "--trial", help="trial number"),
         model: bool = typer.Option(True, "--model/--no-model", help="build the model and list its blocks' "
                                                                  "parameters (imports torch)")):
    """One trial: its metrics, its architecture as JSON, and a summary of the built model."""
    from nas.optuna_access import storage_of
    from nas.results import load_trials
    from nas.study import load_study
    from search_spaces import ArchSpec

    st, config = load_study(_storage(study, storage), study)
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
        out.print(_model_summary(arch, config))


def _model_summary(arch, config) -> Table:
    """The model of ``arch`` built for the study's task: parameters per block, then the rest."""
    from search_spaces import build_model

    model = build_model(arch, config.load_space().io)
    t = Table(title=f"model summary: {escape(arch.summary())}")
    for col in ("stage", "block", "width", "mixer", "ffn", "params"):
        t.add_column(col, justify="right" if col in ("params", "width") else "left")
    for si, (stage, blocks) in enumerate(zip(arch.stages, model.stages)):
        for bi, (spec, block) in enumerate(zip(stage.blocks, blocks)):
            n = sum(p.numel() for p in block.parameters())
            mixer = spec.mixer.type + (f"({', '.join(f'{k}={v}' for k, v in spec.mixer.params.items())})" if spec.mixer.params else "")
            ffn = "none" if spec.ffn.type == "none" else f"{spec.ffn.type} x{spec.ffn.ratio:g}"
            t.add_row(str(si), str(bi), str(stage.dim), mixer, ffn, f"{n:,}")
    total = sum(p.numel() for p in model.parameters())
    t.add_row("", "", "", "stem + head + norms", "", f"{total - sum(p.numel() for s in model.stages for p in s.parameters()):,}")
    t.add_row("", "", "", "[bold]total[/]", "", f"[bold]{total:,}[/]")
    return t


def _load_command_modules():
    """Commands beyond the core live in nas/commands/<topic>.py, each registering on ``app``."""
    import importlib
    import pkgutil

    import nas.commands

    for m in sorted(pkgutil.iter_modules(nas.commands.__path__), key=lambda m: m.name):
        if not m.name.startswith("_"):
            importlib.import_module(f"nas.commands.{m.name}")


_load_command_modules()


def main(argv: Optional[List[str]] = None):
    """Entry point: bad usage (an unknown option, a value out of range) is one line and exit code 2,
    like every other user error; `nas --help` and `nas CMD --help` stay as they are."""
    try:  # recent typer vendors click; older ones use click itself
        from typer._click.exceptions import UsageError as ClickUsageError
        from typer.exceptions import Abort
    except ImportError:  # pragma: no cover - depends on the typer version
        from click.exceptions import Abort
        from click.exceptions import UsageError as ClickUsageError

    try:
        rv = app(args=argv, standalone_mode=False)
    except ClickUsageError as e:
        cmd = e.ctx.command_path if e.ctx is not None else "nas"
        err_always.print(f"error: {e.format_message()} (see `{cmd} --help`)", highlight=False, markup=False)
        sys.exit(2)
    except Abort:  # Ctrl-C outside a search
        err_always.print("interrupted", highlight=False)
        sys.exit(130)
    except UserError as e:  # raised outside a command body
        err_always.print(f"error: {e}", highlight=False, markup=False)
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":  # python -m nas.cli: run the imported module, where nas/commands/ registered
    from nas.cli import main as cli_main

    cli_main()
