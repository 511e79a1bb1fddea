"""Progress output for a running search or confirmation: a live line on a terminal, plain lines otherwise."""

from __future__ import annotations

import logging
import sys
import time

import optuna
from optuna.trial import TrialState
from rich.console import Console

from nas.store.trial_attrs import REUSED_FROM_KEY, error_of

__all__ = ["LogProgress", "Progress", "trial_outcome"]


def trial_outcome(t: optuna.trial.FrozenTrial, names: list[str]) -> str:
    """What a finished trial's progress line ends with: its objective values (``names``) and the
    trial whose result it reused, if any; else its error or state."""
    if t.state == TrialState.COMPLETE:
        vals = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, t.values))
        reused = t.user_attrs.get(REUSED_FROM_KEY)
        return vals + (f" (reused trial {reused})" if reused is not None else "")
    return error_of(t) or t.state.name


class Progress:
    """``start(k, n, summary)`` when a candidate starts, ``end(...)`` when it finishes (a backend
    calls them; a context manager around the run); ``step_start`` / ``step_end`` for the steps of
    another job (``nas confirm``)."""

    def __init__(self, total: int, console: Console | None = None):
        self.total = total
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self._status = None
        self._t0 = time.monotonic()

    def __enter__(self):
        if self.live:
            self._status = self.console.status("starting")
            self._status.__enter__()
        return self

    def __exit__(self, *exc):
        if self._status is not None:
            self._status.__exit__(*exc)
            self._status = None

    def _elapsed(self) -> str:
        s = int(time.monotonic() - self._t0)
        return f"{s // 60}:{s % 60:02d}"

    def start_line(self, done: int, front: int, number: int, summary: str) -> str:
        return f"trial {done + 1}/{self.total} (#{number}) | front {front} | {self._elapsed()} | {summary}"

    def end_line(self, done: int, front: int, number: int, state: str, detail: str) -> str:
        return f"[{done}/{self.total}] trial #{number} {state}: {detail} | front {front} | {self._elapsed()}"

    def start(self, done: int, front: int, number: int, summary: str) -> None:
        self.started(self.start_line(done, front, number, summary))

    def end(self, done: int, front: int, number: int, state: str, detail: str) -> None:
        self.ended(self.end_line(done, front, number, state, detail))

    def step_start(self, done: int, what: str) -> None:
        """A step of a job other than trials starts (``nas confirm``: a training, a timing pass)."""
        self.started(f"{what} ({done + 1}/{self.total}) | {self._elapsed()}")

    def step_end(self, done: int, what: str, detail: str) -> None:
        """A step ended; ``done`` counts it."""
        self.ended(f"[{done}/{self.total}] {what}: {detail} | {self._elapsed()}")

    def started(self, line: str) -> None:
        """Show what runs now: the live line, or a plain ``[start]`` line."""
        if self._status is not None:
            self._status.update(line)
        else:
            print(f"[start] {line}", file=sys.stderr, flush=True)

    def ended(self, line: str) -> None:
        """Show what finished, one line."""
        self.console.print(line, highlight=False, markup=False) if self.live else print(line, file=sys.stderr, flush=True)


class LogProgress(Progress):
    """The same lines through a logger (:func:`nas.search`'s default): each finished trial at
    INFO, each start at DEBUG."""

    def __init__(self, total: int, logger: logging.Logger):
        self.total, self.logger = total, logger
        self.live, self._status = False, None
        self._t0 = time.monotonic()

    def started(self, line: str) -> None:
        self.logger.debug("[start] %s", line)

    def ended(self, line: str) -> None:
        self.logger.info("%s", line)
