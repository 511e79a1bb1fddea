"""The `nas` command line (its commands are listed in README.md; docs/architecture.md says how a
command reaches the study)."""

from __future__ import annotations

import functools
import os
import signal
import sys
from typing import List, Optional

import typer
from rich.console import Console

from nas.api import SearchStopped
from nas.engine import interrupts
from nas.engine.config import resolve_storage
from nas.engine.logs import NORMAL, QUIET, VERBOSE, configure
from nas.errors import UserError

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
TrustCodeOpt = typer.Option(False, "--trust-code", help="run plugin code stored in the study or model folder that "
                                                        "is not on this machine (only if you trust its source)")


def _fail(msg: str, code: int = 2, cause: Optional[BaseException] = None):
    err_always.print(f"error: {msg}", highlight=False, markup=False, soft_wrap=True)
    if cause is not None:
        from nas.store.problems import disk_io_error

        if disk_io_error(cause):  # closing SQLite's connections now may crash with SIGBUS: end here
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    raise typer.Exit(code)


def user_errors(fn):
    """Run a command with stop signals handled (nas/engine/interrupts.py). A user error or a database
    problem (damaged, read-only, locked) ends in one line and exit code 2; Ctrl-C, SIGTERM or SIGHUP
    in one line and exit code 128 + the signal's number. Never a traceback."""

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            with interrupts.handling():
                return fn(*a, **kw)
        except UserError as e:
            _fail(str(e), cause=e)
        except SearchStopped as e:  # the search saved its trials and says how to resume
            err_always.print(f"\n{e}", highlight=False, markup=False)
            raise typer.Exit(128 + e.signum) from None
        except KeyboardInterrupt as e:
            n = interrupts.signal_number(e)
            err_always.print("interrupted" if n == signal.SIGINT else f"terminated by {interrupts.describe(e)}",
                             highlight=False)
            raise typer.Exit(128 + n) from None
        except Exception as e:
            from kernels.registry import UnknownName
            from nas.store.problems import storage_problem

            if isinstance(e, UnknownName):  # e.g. a mixer of a plugin that was not loaded
                _fail(str(e))
            problem = storage_problem(e, kw.get("storage") if isinstance(kw.get("storage"), str) else None)
            if problem is None:
                raise
            _fail(problem, cause=e)

    return wrapper


def storage_for(study: str, storage: Optional[str]) -> str:
    """--storage, else $NAS_STORAGE, else sqlite:///results/<study>.db (nas.engine.config.resolve_storage)."""
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


def main(argv: Optional[List[str]] = None):
    """Entry point: bad usage (an unknown option, a value out of range) is one line and exit code 2,
    like every other user error; `nas --help` and `nas CMD --help` stay as they are. Called as the
    process's command (``argv`` None: the `nas` script, `python -m nas`), it gives the stop signals
    their default action back once the command has finished (:func:`nas.engine.interrupts.exiting`),
    so one that lands while the interpreter shuts down ends it without a traceback."""
    try:
        code = _run(argv)
    finally:
        if argv is None:
            interrupts.exiting()
    sys.exit(code)


def _run(argv: Optional[List[str]]) -> int:
    """Run the command line ``argv`` (None: ``sys.argv``); its exit code."""
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
        return 2
    except Abort:  # Ctrl-C outside a search
        err_always.print("interrupted", highlight=False)
        return 130
    except UserError as e:  # raised outside a command body
        err_always.print(f"error: {e}", highlight=False, markup=False)
        return 2
    return rv if isinstance(rv, int) else 0
