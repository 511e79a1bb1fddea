"""What ``nas confirm`` stores, and reading it back: study user attributes, each written whole when known.

Optuna never changes a finished trial (not its values, not its attributes), so a confirmation keeps
its results in the study's user attributes, under the names of :mod:`nas.store.trial_attrs`:

- ``mixer_nas.confirm`` (:data:`CONFIRM_PASS_ATTR`): the latest pass, a :class:`ConfirmPass`
  (its number, candidates, seeds, rounds, and whether it is done);
- ``mixer_nas.confirm.run:<pass>:<number>:<seed>``: one extra seed's metrics of a candidate (or
  ``{"error": reason}`` when that training failed);
- ``mixer_nas.confirm.timing:<pass>:<metric>``: one paired timing (``latency_ms``, ``latency_ms@long``,
  ``decode_ms``...) of the candidates it lists: ``{"candidates": [...], "rounds": r, "values": {number: metrics}}``;
- ``confirmed_metrics:<number>`` (:data:`CONFIRMED_KEY`): the trial's confirmed metrics, written
  when its pass ends (the metric names of the trial's own ``metrics``, which keep its first values).

Each is one storage write, so a confirmation killed at any point loses at most the training or the
timing in progress, and a rerun reads what is there and skips it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, Optional

import optuna

from nas.store.trial_attrs import CONFIRM_PASS_ATTR, CONFIRM_RUN_ATTR, CONFIRM_TIMING_ATTR, CONFIRMED_KEY

__all__ = ["ConfirmPass", "Confirmations", "confirmed_metrics"]

SEPARATOR = ":"


@dataclass
class ConfirmPass:
    """A confirmation pass: its ``number`` (1, then 2... for each ``--new-pass``), the trial numbers
    it confirms, the seeds per candidate in all, the rounds of its paired timing, and whether its
    results have been written to every candidate (``done``)."""

    number: int
    candidates: list = field(default_factory=list)
    seeds: int = 3
    rounds: int = 30
    done: bool = False

    @classmethod
    def from_dict(cls, d: Mapping) -> "ConfirmPass":
        return cls(int(d["number"]), [int(n) for n in d.get("candidates", [])], int(d.get("seeds", 3)),
                   int(d.get("rounds", 30)), bool(d.get("done", False)))


class Confirmations:
    """The confirmation records of one study (an ``optuna.Study``), read fresh from its storage."""

    def __init__(self, study: optuna.Study):
        self.study = study

    def attrs(self) -> dict:
        """Every study user attribute, as the storage holds them now (one query)."""
        return self.study.user_attrs

    def current(self) -> Optional[ConfirmPass]:
        """The latest pass, or None before the first."""
        d = self.attrs().get(CONFIRM_PASS_ATTR)
        return None if d is None else ConfirmPass.from_dict(d)

    def save_pass(self, p: ConfirmPass) -> None:
        self.study.set_user_attr(CONFIRM_PASS_ATTR, asdict(p))

    @staticmethod
    def run_key(p: ConfirmPass, number: int, seed: int) -> str:
        return SEPARATOR.join((CONFIRM_RUN_ATTR, str(p.number), str(number), str(seed)))

    def save_run(self, p: ConfirmPass, number: int, seed: int, metrics: Mapping) -> None:
        """One extra seed's result (its metrics, or ``{"error": reason}``)."""
        self.study.set_user_attr(self.run_key(p, number, seed), dict(metrics))

    @staticmethod
    def timing_key(p: ConfirmPass, metric: str) -> str:
        return SEPARATOR.join((CONFIRM_TIMING_ATTR, str(p.number), metric))

    def save_timing(self, p: ConfirmPass, metric: str, values: Mapping[int, Mapping]) -> None:
        """A paired timing of ``metric`` (``latency_ms@long``...): each candidate's values."""
        self.study.set_user_attr(self.timing_key(p, metric), {"candidates": sorted(int(n) for n in values),
                                                               "rounds": p.rounds,
                                                               "values": {str(n): dict(v) for n, v in values.items()}})

    @staticmethod
    def timing_of(attrs: Mapping, p: ConfirmPass, metric: str) -> Optional[dict[int, dict]]:
        """The stored timing of ``metric`` in pass ``p``, if it timed exactly ``p``'s candidates in
        ``p.rounds`` rounds."""
        stored = attrs.get(Confirmations.timing_key(p, metric))
        if not stored or stored.get("candidates") != sorted(p.candidates) or stored.get("rounds") != p.rounds:
            return None
        return {int(n): v for n, v in stored["values"].items()}

    def save_confirmed(self, number: int, metrics: Mapping) -> None:
        """Trial ``number``'s confirmed metrics."""
        self.study.set_user_attr(SEPARATOR.join((CONFIRMED_KEY, str(number))), dict(metrics))


def confirmed_metrics(attrs: Mapping) -> dict[int, dict]:
    """``{trial number: confirmed metrics}`` from a study's user attributes (``{}`` when it was
    never confirmed)."""
    prefix = CONFIRMED_KEY + SEPARATOR
    return {int(k[len(prefix):]): v for k, v in attrs.items() if k.startswith(prefix)}
