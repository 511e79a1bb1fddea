"""CLI options whose type and range come from the setting they fill.

``checked_option(default, "--trials", check=check_of(SearchConfig, "trials"), help=...)`` is a
``typer.Option`` that refuses a value outside the declared range while the command line is parsed,
before the command runs: one line, ``error: Invalid value for '--trials': 0 is not allowed (an int
>= 1)``, exit code 2 (see ``nas.cli.base.main``). The range is also shown in ``--help``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import typer

from search_spaces.schema import Check

__all__ = ["BOOTSTRAP", "CPUS_PER_TRIAL", "FIDELITY_N", "GPUS_PER_TRIAL", "REFERENCE_SEEDS", "STEPS", "checked_option"]

# Options that fill no SearchConfig field (those use check_of(SearchConfig, name)):
CPUS_PER_TRIAL = Check(float, above=0)  # ray backend, stored in SearchConfig.extra
GPUS_PER_TRIAL = Check(float, low=0)
FIDELITY_N = Check(int, low=3)  # nas fidelity: architectures to rank
STEPS = Check(int, low=1)  # training steps, as train.steps (evaluators.train.TrainConfig)
BOOTSTRAP = Check(int, low=0)
REFERENCE_SEEDS = Check(int, low=1)


def checked_option(default: Any, *names: str, check: Check, help: str, **kw) -> Any:
    """A typer option whose value (when given; None means "not given") must pass ``check``."""
    check = replace(check, optional=False)  # None is "not given" here, not a value to offer

    def callback(value):
        if value is not None:
            problem = check.error(value)
            if problem:
                raise typer.BadParameter(problem)
        return value

    return typer.Option(default, *names, callback=callback, help=f"{help} ({check.describe()})", **kw)
