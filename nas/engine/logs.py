"""Messages of the engine: the ``nas`` logger, the CLI's ``-q`` / ``-v``, and the quiet end of a Ctrl-C.

The Python API (:mod:`nas.api`) reports through the standard ``logging`` module, on the logger
``nas``: notes (a setting that an existing study ignores) at WARNING, the study line, each
finished trial and the backends' messages at INFO, details at DEBUG. A program sees the notes
(Python's last-resort handler prints warnings) and configures ``logging`` for more, as with any
library. The CLI calls :func:`configure` once per command: ``-q`` keeps errors only, the default
shows INFO, ``-v`` shows DEBUG and Optuna's own INFO lines (one per finished trial).
"""

from __future__ import annotations

import logging
import sys
from typing import Callable

__all__ = ["LOGGER", "QUIET", "NORMAL", "VERBOSE", "InterruptFallout", "configure", "quiet_interrupt_fallout"]

LOGGER = "nas"
QUIET, NORMAL, VERBOSE = -1, 0, 1  # -q, (none), -v
LEVELS = {QUIET: logging.ERROR, NORMAL: logging.INFO, VERBOSE: logging.DEBUG}


class _Emit(logging.Handler):
    """Hands each formatted record to ``emit_line`` (the CLI's stderr console)."""

    def __init__(self, emit_line: Callable[[str], None]):
        super().__init__(logging.DEBUG)
        self.emit_line = emit_line

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.emit_line(self.format(record))
        except Exception:  # noqa: BLE001 - logging's rule: a handler never raises
            self.handleError(record)


def configure(verbosity: int, emit_line: Callable[[str], None]) -> None:
    """Send the ``nas`` logger's records at ``verbosity`` (QUIET, NORMAL or VERBOSE) to
    ``emit_line``; VERBOSE also sends Optuna's records (INFO and up) there instead of Optuna's
    own handler. Calling it again replaces the previous set-up (the tests run many commands in
    one process)."""
    if verbosity not in LEVELS:
        raise ValueError(f"verbosity {verbosity!r} is not one of {sorted(LEVELS)}")
    log = logging.getLogger(LOGGER)
    _remove_ours(log)
    log.addHandler(_Emit(emit_line))
    log.setLevel(LEVELS[verbosity])
    optuna_log = logging.getLogger("optuna")
    if _remove_ours(optuna_log) or verbosity == VERBOSE:
        import optuna

        import nas.store.study  # noqa: F401 - it sets Optuna's verbosity when first imported: before ours

        if verbosity == VERBOSE:
            optuna.logging.disable_default_handler()
            optuna_log.addHandler(_Emit(emit_line))
            optuna.logging.set_verbosity(logging.INFO)
        else:
            optuna.logging.enable_default_handler()
            optuna.logging.set_verbosity(logging.ERROR)


def _remove_ours(log: logging.Logger) -> bool:
    ours = [h for h in log.handlers if isinstance(h, _Emit)]
    for h in ours:
        log.removeHandler(h)
    return bool(ours)


class InterruptFallout(logging.Filter):
    """Logging filter: drops records whose exception was raised while a Ctrl-C unwound (a
    KeyboardInterrupt in its context chain), e.g. SQLAlchemy's "Error closing cursor" when the
    interrupt lands inside a database read. The interrupt itself is reported once, by the search."""

    def filter(self, record) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        seen = set()
        while exc is not None and id(exc) not in seen:
            if isinstance(exc, KeyboardInterrupt):
                return False
            seen.add(id(exc))
            exc = exc.__cause__ or exc.__context__
        return True


class _Stderr(logging.StreamHandler):
    """A stderr handler that writes to whatever ``sys.stderr`` is when it emits (tests swap it)."""

    stream = property(lambda self: sys.stderr, lambda self, value: None)


def quiet_interrupt_fallout() -> None:
    """Route SQLAlchemy's log records (warnings and errors, as Python's last-resort handler would)
    through a stderr handler that leaves out the fallout of a Ctrl-C. Idempotent."""
    log = logging.getLogger("sqlalchemy")
    if any(isinstance(f, InterruptFallout) for h in log.handlers for f in h.filters):
        return
    handler = _Stderr()
    handler.setLevel(logging.WARNING)
    handler.addFilter(InterruptFallout())
    log.addHandler(handler)
