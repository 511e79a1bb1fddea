"""A proxy ladder: cheap rungs first, each deciding whether a candidate goes on to the next.

Declared in a space file (``ladder:``), in order::

    ladder:
      - {rung: filter, max: {params: 200000, flops: 2.0e7}}     # before anything is trained
      - {rung: predict, max: {latency_ms@long: 20}}             # predicted latency (block tables)
      - {rung: zero_cost, metric: snip, keep: 0.5}              # zero-cost score at initialisation
      - {rung: train, steps: 50, keep: 0.5}                     # accuracy after 50 of train.steps

The last rung is always the full proxy training (``train.steps``). A ``filter`` rung prunes a
candidate outside its bounds. A ``predict`` rung bounds latencies predicted from block latency
tables (``latency_ms``, ``latency_ms@<profile>``; ``evaluators.predictor``) and prunes a candidate
predicted outside them before it is trained; without ``max``/``min`` it takes the bounds of the
space's constraints on those metrics. A ``zero_cost`` or ``train`` rung promotes asynchronously, as
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

__all__ = ["Ladder", "Rung", "LadderPruned", "check_filter", "parse_ladder", "promote"]

KINDS = ("filter", "predict", "zero_cost", "train")
PREDICTABLE = "latency_ms"  # the metric a predict rung predicts, at the task's shape or a profile


@dataclass(frozen=True)
class Rung:
    kind: str
    max: dict = field(default_factory=dict)  # filter: metric -> upper bound
    min: dict = field(default_factory=dict)  # filter: metric -> lower bound
    metric: str = ""  # zero_cost: which proxy (higher is better)
    steps: int = 0  # train: the step at which accuracy is compared
    keep: float = 0.5
    min_trials: int = 4
    profiles: dict = field(default_factory=dict)  # predict: bounded metric -> its deployment profile

    @property
    def name(self) -> str:
        if self.kind == "zero_cost":
            return f"zero_cost:{self.metric}"
        if self.kind == "train":
            return f"train@{self.steps}"
        return self.kind


class LadderPruned(Exception):
    """A rung stopped the candidate. ``values``: scores per rung so far; ``passed``: rung names."""

    def __init__(self, rung: str, reason: str, values: dict, passed: list):
        super().__init__(f"stopped at rung {rung}: {reason}")
        self.rung, self.reason, self.values, self.passed = rung, reason, dict(values), list(passed)


class Ladder:
    """One candidate's climb: the rungs in order, the scores earlier candidates had at each
    (``history``: rung name -> scores), and what this candidate has done so far. Each judgement
    either records the rung as passed or raises :class:`LadderPruned` with the rung's reason."""

    def __init__(self, rungs: Sequence[Rung], history: Optional[Mapping[str, Sequence[float]]] = None):
        self.rungs, self.history = tuple(rungs), history or {}
        self.values: dict = {}  # score per rung (and predicted metrics)
        self.passed: list = []  # names of the rungs passed, in order

    @property
    def screens(self) -> tuple:
        """The rungs judged before training (filter, predict, zero_cost), in order."""
        return tuple(r for r in self.rungs if r.kind != "train")

    @property
    def checkpoints(self) -> tuple:
        """The train rungs, by increasing step."""
        return tuple(r for r in self.rungs if r.kind == "train")

    def judge(self, rung: Rung, why: Optional[str], values: Optional[Mapping] = None) -> None:
        """Record ``values``; stop the candidate at ``rung`` if there is a reason ``why``."""
        self.values.update(values or {})
        if why:
            raise LadderPruned(rung.name, why, self.values, self.passed)
        self.passed.append(rung.name)

    def rank(self, rung: Rung, score: float, what: str) -> None:
        """Promote ``score`` (described by ``what``) against the rung's history, or stop here."""
        self.values[rung.name] = score
        seen = self.history.get(rung.name, ())
        promoted = promote(score, seen, rung.keep, rung.min_trials)
        self.judge(rung, None if promoted else f"{what} is not in the top {rung.keep:g} of {len(seen) + 1}")

    def outcome(self) -> dict:
        """What a candidate that climbed every rung carries (nothing without a ladder)."""
        if not self.rungs:
            return {}
        return {"ladder_values": dict(self.values), "ladder_passed": self.passed + ["train"]}


RUNG_KEYS = {"filter": {"rung", "max", "min"}, "predict": {"rung", "max", "min"}, "zero_cost": {"rung", "metric", "keep", "min_trials"},
             "train": {"rung", "steps", "keep", "min_trials"}}
KIND = Check(str, choices=KINDS)
KEEP = Check(float, above=0, high=1)
MIN_TRIALS = Check(int, low=1)
BOUND = Check(float)
LATENCY_MAX = Check(float, above=0, what="a latency in ms > 0; a bound at or below 0 prunes every candidate")


def parse_ladder(raw, *, train_steps: int, zero_cost_names: Sequence[str], filter_metrics: Sequence[str],
                 profiles: Optional[Mapping] = None, constraints: Optional[Mapping] = None) -> tuple:
    """Validate the ``ladder`` list of a space file; a :class:`SettingError` names ``ladder[i].key``.
    ``profiles`` (name -> Profile) and ``constraints`` (metric -> {max, min}) are the space's, for
    ``predict`` rungs."""
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
        elif kind == "predict":
            rungs.append(_predict_rung(r, p, profiles or {}, constraints or {}))
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


def _predict_rung(r: dict, p: str, profiles: Mapping, constraints: Mapping) -> Rung:
    allowed = {PREDICTABLE: None, **{f"{PREDICTABLE}@{name}": prof for name, prof in profiles.items()}}
    if "max" not in r and "min" not in r:  # the space's constraints on predictable metrics
        r = {b: {m: c[b] for m, c in constraints.items() if m in allowed and b in c} for b in ("max", "min")}
        if not r["max"] and not r["min"]:
            raise SettingError(p, f"a predict rung needs max or min bounds on {sorted(allowed)}, or a constraint "
                                  "on one of them")
    rung = _filter_rung(r, p, tuple(allowed))
    for m, bound in rung.max.items():  # a latency is > 0: a max <= 0 would prune every candidate
        LATENCY_MAX.coerce(bound, f"{p}.max.{m}")
    return Rung("predict", max=rung.max, min=rung.min,
                profiles={m: allowed[m] for m in (*rung.max, *rung.min) if allowed[m] is not None})


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
    """Why ``metrics`` fail a filter rung's bounds (the first bound crossed), or None if they pass."""
    for m, bound in rung.max.items():
        if metrics[m] > bound:
            return f"{m} {metrics[m]:.4g} > max {bound:.4g}"
    for m, bound in rung.min.items():
        if metrics[m] < bound:
            return f"{m} {metrics[m]:.4g} < min {bound:.4g}"
    return None
