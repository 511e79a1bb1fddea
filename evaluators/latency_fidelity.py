"""Predicted vs measured latency: how well block latency tables rank and size whole models.

:func:`compare` predicts each architecture's latency at each profile from a
:class:`~evaluators.predictor.Predictor` (timing the parts its table lacks), then times each whole
model as ``latency_ms@<profile>`` is timed (``evaluators.profile_costs.measure_profile``), and finally
predicts every architecture again from the now complete table, which is what screening a candidate
costs. :func:`agreement` reports, per profile, over all architectures and per mixer family:
Kendall's tau-b of predicted against measured, and the median and 90th percentile of the relative
error |predicted - measured| / measured.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from evaluators.errors import TooLarge
from evaluators.latency import LatencyConfig
from evaluators.model_memory import check_profile
from evaluators.predictor import Predictor
from evaluators.profile_costs import ProfileRequest, measure_profile
from search_spaces.deploy_profiles import Profile, metric_name
from search_spaces.task_io import TaskIO

__all__ = ["agreement", "compare", "to_markdown"]


def compare(archs: Sequence, io: TaskIO, profiles: Mapping[str, Profile], predictor: Predictor,
            latency: LatencyConfig, *, seed: int = 0, log: Optional[Callable[[str], None]] = None) -> pd.DataFrame:
    """One row per (profile, architecture): ``predicted``, ``measured`` (ms), ``parts``,
    ``parts_timed`` (missing from the table, timed for this prediction), ``fill_s`` (that
    prediction's time), ``measure_s`` (timing the whole model) and ``screen_s`` (predicting it
    again from the complete table). ``profiles`` maps a label to each profile. An architecture
    whose model at a profile would not fit in this machine's memory is left out there (logged)."""
    rows = []
    for label, profile in profiles.items():
        name = metric_name("latency_ms", profile.name)
        done = []
        for i, arch in enumerate(archs):
            try:
                check_profile(arch, io, profile)
            except TooLarge as e:
                if log is not None:
                    log(f"[{label} {i + 1}/{len(archs)}] {arch.arch_id} left out: {e} | {arch.summary()}")
                continue
            done.append(arch)
            t0 = time.perf_counter()
            pred = predictor.predict(arch, io, profile)
            t1 = time.perf_counter()
            measured = measure_profile(arch, io, ProfileRequest(profile, ("latency_ms",)), latency, seed=seed)[name]
            rows.append({"profile": label, "arch_id": arch.arch_id, "family": arch.dominant_family(),
                         "predicted": pred.ms, "measured": measured, "parts": len(pred.parts),
                         "parts_timed": pred.timed, "fill_s": t1 - t0, "measure_s": time.perf_counter() - t1,
                         "summary": arch.summary()})
            if log is not None:
                log(f"[{label} {i + 1}/{len(archs)}] {arch.arch_id} predicted {pred.ms:.4g} ms, measured "
                    f"{measured:.4g} ms ({pred.ms / measured - 1:+.1%}); {pred.timed} of {len(pred.parts)} parts "
                    f"timed now | {arch.summary()}")
        for row, arch in zip(rows[len(rows) - len(done):], done):  # screening: the table now has every part
            t0 = time.perf_counter()
            again = predictor.predict(arch, io, profile)
            row["screen_s"] = time.perf_counter() - t0
            if again.timed or again.ms != row["predicted"]:
                raise RuntimeError(f"{arch.arch_id}: a complete table gave another prediction ({again.ms} ms, "
                                   f"{again.timed} parts timed) than the first ({row['predicted']} ms)")
    return pd.DataFrame(rows)


def _rel_errors(g: pd.DataFrame) -> np.ndarray:
    return np.abs(g["predicted"].to_numpy(float) - g["measured"].to_numpy(float)) / g["measured"].to_numpy(float)


def agreement(df: pd.DataFrame, *, min_family: int = 4) -> pd.DataFrame:
    """Per profile and group (``all``, then each family with >= ``min_family`` architectures): n,
    Kendall tau-b (predicted vs measured), median and 90th-percentile relative error, and the
    bias (median of predicted / measured - 1)."""
    rows = []
    for label, p in df.groupby("profile", sort=False):
        groups = [("all", p)] + [(f, g) for f, g in p.groupby("family") if len(g) >= min_family]
        for group, g in groups:
            err = _rel_errors(g)
            tau = float(stats.kendalltau(g["predicted"], g["measured"]).statistic) if len(g) >= 3 else math.nan
            bias = float(np.median(g["predicted"].to_numpy(float) / g["measured"].to_numpy(float) - 1))
            rows.append({"profile": label, "group": group, "n": len(g), "tau": tau,
                         "rel_err_median": float(np.median(err)), "rel_err_p90": float(np.percentile(err, 90)),
                         "bias": bias})
    return pd.DataFrame(rows)


def to_markdown(df: pd.DataFrame, agree: pd.DataFrame, *, header: str = "") -> str:
    """The report: agreement per profile and family, screening cost, then every architecture."""
    lines = [header.rstrip(), ""] if header else []
    lines += ["| profile | group | n | Kendall tau | median rel. error | p90 rel. error | bias (median pred/meas - 1) |",
              "|---|---|---|---|---|---|---|"]
    for _, r in agree.iterrows():
        lines.append(f"| {r['profile']} | {r['group']} | {r['n']} | {r['tau']:+.3f} | {r['rel_err_median']:.1%} "
                     f"| {r['rel_err_p90']:.1%} | {r['bias']:+.1%} |")
    lines += ["", "| profile | measure whole models (s) | fill the table (s) | screen from the table (s) | screen / measure |",
              "|---|---|---|---|---|"]
    for label, p in df.groupby("profile", sort=False):
        m, f, s = p["measure_s"].sum(), p["fill_s"].sum(), p["screen_s"].sum()
        lines.append(f"| {label} | {m:.2f} | {f:.2f} | {s:.3f} | {s / m:.2%} |")
    lines += ["", "| profile | arch | family | predicted ms | measured ms | error | parts (timed now) | summary |",
              "|---|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        lines.append(f"| {r['profile']} | {r['arch_id']} | {r['family']} | {r['predicted']:.4g} | {r['measured']:.4g} "
                     f"| {r['predicted'] / r['measured'] - 1:+.1%} | {r['parts']} ({r['parts_timed']}) "
                     f"| {str(r['summary']).replace('|', '/')} |")
    return "\n".join(lines) + "\n"
