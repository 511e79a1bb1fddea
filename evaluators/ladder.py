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


def parse_ladder(raw, *, train_steps: int, zero_cost_names: Sequence[str], filter_metrics: Sequence[str]) -> tuple:
    """Validate the ``ladder`` list of a space file; errors name ``ladder[i].key``."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError("ladder: must be a list of rungs")
    rungs = []
    prev_steps = 0
    for i, r in enumerate(raw):
        p = f"ladder[{i}]"
        if not isinstance(r, dict) or "rung" not in r:
            raise ValueError(f"{p}: each rung is a mapping with a 'rung' key ({list(KINDS)})")
        kind = r["rung"]
        allowed = {"filter": {"rung", "max", "min"}, "zero_cost": {"rung", "metric", "keep", "min_trials"},
                   "train": {"rung", "steps", "keep", "min_trials"}}.get(kind)
        if allowed is None:
            raise ValueError(f"{p}.rung: {kind!r} is not one of {list(KINDS)}")
        unknown = sorted(set(r) - allowed)
        if unknown:
            raise ValueError(f"{p}.{unknown[0]}: unknown key for a {kind} rung; allowed: {sorted(allowed)}")
        keep, min_trials = r.get("keep", 0.5), r.get("min_trials", 4)
        if not isinstance(keep, (int, float)) or isinstance(keep, bool) or not 0 < keep <= 1:
            raise ValueError(f"{p}.keep: {keep!r} must be a fraction in (0, 1]")
        if not isinstance(min_trials, int) or isinstance(min_trials, bool) or min_trials < 1:
            raise ValueError(f"{p}.min_trials: {min_trials!r} must be an integer >= 1")
        if kind == "filter":
            bounds = {}
            for b in ("max", "min"):
                d = r.get(b, {}) or {}
                if not isinstance(d, dict):
                    raise ValueError(f"{p}.{b}: must be a mapping metric: number")
                for m, v in d.items():
                    if m not in filter_metrics:
                        raise ValueError(f"{p}.{b}.{m}: a filter rung can bound {list(filter_metrics)}")
                    if _number(v) is None:
                        raise ValueError(f"{p}.{b}.{m}: {v!r} must be a number")
                bounds[b] = {m: _number(v) for m, v in d.items()}
            if not bounds["max"] and not bounds["min"]:
                raise ValueError(f"{p}: a filter rung needs max or min bounds")
            rungs.append(Rung("filter", max=bounds["max"], min=bounds["min"]))
        elif kind == "zero_cost":
            m = r.get("metric")
            if m not in zero_cost_names:
                raise ValueError(f"{p}.metric: {m!r} is not one of {list(zero_cost_names)}")
            rungs.append(Rung("zero_cost", metric=m, keep=float(keep), min_trials=min_trials))
        else:
            steps = r.get("steps")
            if not isinstance(steps, int) or isinstance(steps, bool) or not prev_steps < steps < train_steps:
                raise ValueError(f"{p}.steps: {steps!r} must be an integer between the previous train rung "
                                 f"({prev_steps}) and train.steps ({train_steps}), exclusive")
            prev_steps = steps
            rungs.append(Rung("train", steps=steps, keep=float(keep), min_trials=min_trials))
    return tuple(rungs)


def _number(v) -> Optional[float]:
    """A number, also from a string such as "2.0e7" (YAML 1.1 reads exponents without a sign as text)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


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
