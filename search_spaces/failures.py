"""Exceptions as one-line reasons: what a failed trial, plugin or metric stores and prints.

Here, in the lowest package that ``nas``, ``evaluators`` and ``search_spaces`` all import, so each
writes a reason the same way.
"""

from __future__ import annotations

__all__ = ["failure_reason", "first_line", "trial_failure_reason"]


def first_line(exc: BaseException) -> str:
    """The first non-empty line of the exception's message; its type's name if the message is empty."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def failure_reason(exc: BaseException) -> str:
    """``"TypeName: first line of the message"``, or ``"TypeName"`` when the message is empty."""
    name = type(exc).__name__
    return f"{name}: {first_line(exc)}" if str(exc).strip() else name


def trial_failure_reason(exc: BaseException) -> str:
    """The reason a trial failed with: :func:`failure_reason`, and for ``SystemExit`` (user code
    inside the trial, a mixer or a metric, called ``sys.exit``) ``"SystemExit: 3 raised inside the
    trial"``, so it is not read as the search exiting."""
    reason = failure_reason(exc)
    return f"{reason} raised inside the trial" if isinstance(exc, SystemExit) else reason
