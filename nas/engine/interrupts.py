"""Stop signals: SIGTERM and SIGHUP stop a command the way Ctrl-C (SIGINT) does.

``kill``, ``timeout``, a container stop and batch schedulers send SIGTERM; a closed terminal sends
SIGHUP. Inside :func:`handling`, each of these raises :class:`Interrupted` (a KeyboardInterrupt, so
every clean-up written for Ctrl-C runs for it too): the running trial is recorded FAIL
("interrupted by SIGTERM") and queued again, the resume command is printed, and the exit code is
128 + the signal's number. A signal the process was started with ignored (``nohup``, a shell's
background job) stays ignored. A second stop signal while the first is being handled ends the
process at once, as the signal's default action would (heartbeats make that safe too).

:func:`deferred` holds a stop signal back while a few database writes must happen together (create
a study and store its config; start a trial and record its first heartbeat), and raises it after.

Once a command has finished, :func:`exiting` gives the stop signals their default action back (the
``nas`` process calls it as it returns). A stop signal that lands while the interpreter shuts down
(atexit hooks, finalizers such as torch's) then ends the process as the signal's default action
does, with no output: the command's work is done and stored, so there is nothing to clean up, and
Python's own SIGINT handler would raise KeyboardInterrupt inside a finalizer and print its
traceback. The exit status is then the signal's (a shell shows 128 + its number), not the command's.
Ignoring the signal instead would leave no way to stop a shutdown that hangs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Optional

__all__ = ["Interrupted", "STOP_SIGNALS", "deferred", "describe", "exiting", "handling", "received", "reinstall",
           "signal_number"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_state = {"depth": 0, "defer": 0, "pending": None, "stopping": False, "received": None, "previous": {},
          "hook": None}


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def signal_number(exc: BaseException) -> int:
    """The signal behind a KeyboardInterrupt (a plain one is Ctrl-C)."""
    return getattr(exc, "signum", int(signal.SIGINT))


def describe(exc: BaseException) -> str:
    """``Ctrl-C`` for SIGINT, else the signal's name (``SIGTERM``)."""
    n = signal_number(exc)
    return "Ctrl-C" if n == signal.SIGINT else signal.Signals(n).name


def _on_signal(signum, _frame):
    if _state["stopping"]:  # asked twice: stop now, as the signal's default action would
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _state["received"] = _state["received"] or signum
    if _state["defer"]:
        _state["pending"] = _state["pending"] or signum
        return
    _state["stopping"] = True
    raise Interrupted(signum)


def _install() -> None:
    for s in STOP_SIGNALS:
        current = signal.getsignal(s)
        if current in (signal.SIG_IGN, None) or current is _on_signal:
            continue  # started ignored (nohup, a background job): leave it so
        _state["previous"][s] = current
        signal.signal(s, _on_signal)


def received() -> Optional[Interrupted]:
    """The stop signal this process got inside :func:`handling`, as the exception it raised (or would
    have: code that catches KeyboardInterrupt itself, such as Ray Tune's run loop, may have swallowed
    it); None when none came."""
    return None if _state["received"] is None else Interrupted(_state["received"])


def reinstall() -> None:
    """Take the stop signals back inside :func:`handling` (Ray's ``init`` sets its own SIGTERM handler)."""
    if _state["depth"] and threading.current_thread() is threading.main_thread():
        for s in STOP_SIGNALS:
            if signal.getsignal(s) not in (signal.SIG_IGN, None, _on_signal):
                signal.signal(s, _on_signal)


def _unraisable(args) -> None:
    """A stop signal whose handler ran inside a finalizer (a weakref callback, ``__del__``) cannot
    propagate from there: Python would print it as "Exception ignored" and go on. It is kept pending
    instead, and raised at the end of the next deferred block or of :func:`handling`."""
    if isinstance(args.exc_value, Interrupted):
        _state["pending"] = _state["pending"] or args.exc_value.signum
        return
    (_state["hook"] or sys.__unraisablehook__)(args)


@contextlib.contextmanager
def handling():
    """Stop signals raise :class:`Interrupted` in the main thread while inside (nestable; a no-op
    outside the main thread). The previous handlers come back on the way out; a signal that was
    swallowed meanwhile (see :func:`_unraisable`) is raised then."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _state["depth"] == 0:
        _state.update(stopping=False, pending=None, received=None, defer=0, previous={}, hook=sys.unraisablehook)
        sys.unraisablehook = _unraisable
        _install()
    _state["depth"] += 1
    finished = False
    try:
        yield
        finished = True
    finally:
        _state["depth"] -= 1
        if _state["depth"] == 0:
            for s, previous in _state["previous"].items():
                signal.signal(s, previous)
            _state["previous"] = {}
            sys.unraisablehook = _state["hook"] or sys.__unraisablehook__
    pending = _state["pending"]
    if finished and pending is not None and not _state["defer"]:
        _state["pending"] = None
        raise Interrupted(pending)


@contextlib.contextmanager
def deferred():
    """A stop signal that arrives inside is raised when the block ends (after its writes)."""
    _state["defer"] += 1
    try:
        yield
    finally:
        _state["defer"] -= 1
    pending = _state["pending"]
    if not _state["defer"] and pending is not None:  # (if the block raised, its error goes first)
        _state["pending"] = None
        _state["stopping"] = True
        raise Interrupted(pending)


def exiting() -> None:
    """The process's command has finished: flush what it printed, then give each stop signal its
    default action (end the process silently), but leave an ignored one ignored. Main thread only."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # closed, or a pipe whose reader has gone
            stream.flush()
    for s in STOP_SIGNALS:
        if signal.getsignal(s) not in (signal.SIG_IGN, None):
            signal.signal(s, signal.SIG_DFL)
