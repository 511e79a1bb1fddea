"""A proxy ladder: cheap rungs first, each deciding whether a candidate goes on to the next.

Declared in a space file (``ladder:``), in order::

    ladder:
      - {rung: filter, max: {params: 200000, flops: 2.0e7}}     # before anything is trained
      - {rung: zero_cost, metric: snip, keep: 0.5}              # zero-cost score at initialisation
      - {rung: train, steps: 50, keep: 0.5}                     # accuracy after 50 of train.steps

The last rung is always the full proxy training (``train.steps``). A ``filter`` rung prunes a
candidate outside its bounds. A ``zero_cost`` or ``train`` rung promotes asynchronously, as
successive halving does in ASHA: with fewer than ``min_trials`` earlier scores at that rung the
candidate goes on; otherwise it goes on only if its score is in the top ``keep`` fraction of the
scores seen at that rung (its own included). A pruned candidate is recorded with the rung it
stopped at, the rungs it passed and its scores; it is not trained further.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from search_spaces.schema import Check, SettingError, check_keys

__all__ = ["Rung", "LadderPruned", "parse_ladder", "promote"]

KINDS = ("filter", "zero_cost", "train")


@dataclass(frozen=True)
class Rung:
    kind: str
    max: dict = field(default_factory=dict)  # filter: metric -> upper bound
    min: dict = field(default_factory=dict)  # filter: metric -> lower bound
    metric: str = ""  # zero_cost: which proxy (higher is better)
    steps: int = 0  # train: the step at which accuracy is compared
    keep: float = 0.5
    min_trials: int = 4

    @property
    def name(self) -> str:
        if self.kind == "zero_cost":
            return f"zero_cost:{self.metric}"
        if self.kind == "train":
            return f"train@{self.steps}"
        return "filter"


class LadderPruned(Exception):
    """A rung stopped the candidate. ``values``: scores per rung so far; ``passed``: rung names."""

    def __init__(self, rung: str, reason: str, values: dict, passed: list):
        super().__init__(f"stopped at rung {rung}: {reason}")
        self.rung, self.reason, self.values, self.passed = rung, reason, dict(values), list(passed)


RUNG_KEYS = {"filter": {"rung", "max", "min"}, "zero_cost": {"rung", "metric", "keep", "min_trials"},
             "train": {"rung", "steps", "keep", "min_trials"}}
KIND = Check(str, choices=KINDS)
KEEP = Check(float, above=0, high=1)
MIN_TRIALS = Check(int, low=1)
BOUND = Check(float)


def parse_ladder(raw, *, train_steps: int, zero_cost_names: Sequence[str], filter_metrics: Sequence[str]) -> tuple:
    """Validate the ``ladder`` list of a space file; a :class:`SettingError` names ``ladder[i].key``."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SettingError("ladder", "must be a list of rungs")
    rungs = []
    prev_steps = 0
    for i, r in enumerate(raw):
        p = f"ladder[{i}]"
        if not isinstance(r, dict) or "rung" not in r:
            raise SettingError(p, f"each rung is a mapping with a 'rung' key ({list(KINDS)})")
        kind = KIND.coerce(r["rung"], f"{p}.rung")
        check_keys(r, RUNG_KEYS[kind], p, f"key for a {kind} rung")
        keep = KEEP.coerce(r.get("keep", 0.5), f"{p}.keep")
        min_trials = MIN_TRIALS.coerce(r.get("min_trials", 4), f"{p}.min_trials")
        if kind == "filter":
            rungs.append(_filter_rung(r, p, filter_metrics))
        elif kind == "zero_cost":
            metric = Check(str, choices=tuple(zero_cost_names)).coerce(r.get("metric"), f"{p}.metric")
            rungs.append(Rung("zero_cost", metric=metric, keep=keep, min_trials=min_trials))
        else:
            steps = Check(int, above=prev_steps, below=train_steps,
                          what=f"an int between the previous train rung ({prev_steps}) and train.steps "
                               f"({train_steps}), exclusive").coerce(r.get("steps"), f"{p}.steps")
            prev_steps = steps
            rungs.append(Rung("train", steps=steps, keep=keep, min_trials=min_trials))
    return tuple(rungs)


def _filter_rung(r: dict, p: str, filter_metrics: Sequence[str]) -> Rung:
    bounds = {}
    for b in ("max", "min"):
        d = check_keys(r.get(b), filter_metrics, f"{p}.{b}", "metric for a filter rung")
        bounds[b] = {m: BOUND.coerce(v, f"{p}.{b}.{m}") for m, v in d.items()}
    if not bounds["max"] and not bounds["min"]:
        raise SettingError(p, "a filter rung needs max or min bounds")
    return Rung("filter", max=bounds["max"], min=bounds["min"])


def promote(value: float, history: Sequence[float], keep: float, min_trials: int) -> bool:
    """ASHA's rule for one rung (higher is better): promote while fewer than ``min_trials``
    scores are known, else when ``value`` ranks in the top ``keep`` fraction of history + value."""
    if not math.isfinite(value):
        return False
    scores = [h for h in history if math.isfinite(h)]
    if len(scores) < min_trials:
        return True
    scores = sorted(scores + [value], reverse=True)
    n_keep = max(1, math.floor(keep * len(scores)))
    return value >= scores[n_keep - 1]


def check_filter(rung: Rung, metrics: Mapping[str, float]) -> Optional[str]:
    for m, bound in rung.max.items():
        if metrics[m] > bound:
            return f"{m} {metrics[m]:.4g} > max {bound:.4g}"
    for m, bound in rung.min.items():
        if metrics[m] < bound:
            return f"{m} {metrics[m]:.4g} < min {bound:.4g}"
    return None
