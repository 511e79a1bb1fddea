"""Latency predictor (block latency tables) against measured latency, on seq-hybrid at two profiles.

    nice -n 10 .venv/bin/python benchmarks/latency_predictor.py [--n 30] [--seed 0] [--long-seq 1024] [--long-dim 2]

Samples N architectures of the space. At each profile (the task's shape, and a long one: the given
length and width factor), predicts each architecture from a block latency table in an SQLite
database (timing the parts it lacks: this fills the table), times the whole model as
``latency_ms@profile`` is timed, then predicts every architecture again from the complete table
(the cost of screening). A second whole-model pass gives the noise ceiling (how well one
measurement ranks the other), and the predictor is also compared with that pass and with the
geometric mean of both. Prints Kendall tau, median and 90th-percentile relative error, per
family, with two calibrations fitted leave-one-out beside the plain sum (a per-model constant:
the median of measured - predicted over the other architectures; a ratio: the median of measured /
predicted), and the cost of screening against measuring.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import _repo_path  # noqa: F401  (repository root first on sys.path)


def _second_pass(df, archs, io, profiles, latency, seed):
    """Every whole model timed a second time, after the first pass and the table's filling: a
    column ``again`` beside ``measured`` (the first pass)."""
    import numpy as np

    from evaluators.profile_costs import ProfileRequest, measure_profile
    from search_spaces.deploy_profiles import metric_name

    df = df.copy()
    for label, p in profiles.items():
        name = metric_name("latency_ms", p.name)
        rows = df.index[df["profile"] == label]
        df.loc[rows, "again"] = np.array([measure_profile(a, io, ProfileRequest(p, ("latency_ms",)), latency,
                                                          seed=seed)[name] for a in archs])
    return df


def _against(df, column: str):
    """Per profile: Kendall tau and median relative error of ``predicted`` against ``column``, and
    of the second pass against the first (the noise ceiling)."""
    import numpy as np
    from scipy import stats

    out = {}
    for label, g in df.groupby("profile", sort=False):
        ref, pred = g[column].to_numpy(float), g["predicted"].to_numpy(float)
        first, again = g["measured"].to_numpy(float), g["again"].to_numpy(float)
        out[label] = (float(stats.kendalltau(pred, ref).statistic), float(np.median(np.abs(pred - ref) / ref)),
                      float(stats.kendalltau(first, again).statistic),
                      float(np.median(np.abs(first - again) / first)))
    return out


def _calibrated(df, how: str):
    """``predicted`` corrected per model by ``how``: ``constant`` adds the median of measured -
    predicted, ``ratio`` multiplies by the median of measured / predicted, each fitted for a row on
    the other rows of its profile (leave-one-out), as a search would fit it on re-checked models."""
    import numpy as np

    df = df.copy()
    for _profile, g in df.groupby("profile", sort=False):
        pred, meas = g["predicted"].to_numpy(float), g["measured"].to_numpy(float)
        d = meas - pred if how == "constant" else meas / pred
        loo = np.array([np.median(np.delete(d, i)) for i in range(len(d))])
        df.loc[g.index, "predicted"] = pred + loo if how == "constant" else pred * loo
    return df


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="seq-hybrid")
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--long-seq", type=int, default=1024)
    ap.add_argument("--long-dim", type=int, default=2)
    args = ap.parse_args()

    from evaluators.fidelity import sample_archs
    from evaluators.latency import LatencyConfig
    from evaluators.latency_fidelity import agreement, compare
    from evaluators.predictor import Predictor, cpu_model
    from evaluators.profile_costs import task_profile
    from nas.engine.config import load_space_checked
    from nas.store.latency_tables import open_latency_table
    from search_spaces.deploy_profiles import Profile, Scale

    space = load_space_checked(args.space)
    latency = LatencyConfig.from_dict(space.latency)
    profiles = {"task": task_profile(space.io, latency),
                "long": Profile("long", seq_len=args.long_seq, scale=Scale(dim=args.long_dim))}
    archs = sample_archs(space, args.n, args.seed)
    print(f"machine: {platform.machine()}, {cpu_model()}, {os.cpu_count()} cores; load average "
          f"{os.getloadavg()[0]:.2f} before; space {args.space}, {args.n} architectures; profiles: task "
          f"(seq_len {space.io.seq_len}), long (seq_len {args.long_seq}, width x{args.long_dim}); latency {space.latency}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        table = open_latency_table(f"sqlite:///{d}/tables.db")
        df = compare(archs, space.io, profiles, Predictor(table, latency, seed=args.seed), latency, seed=args.seed)
        df = _second_pass(df, archs, space.io, profiles, latency, args.seed)
        parts = table.count()
    print(f"done in {time.perf_counter() - t0:.0f}s; {parts} distinct parts timed; load average "
          f"{os.getloadavg()[0]:.2f} after\n")
    plain, const, ratio = agreement(df), agreement(_calibrated(df, "constant")), agreement(_calibrated(df, "ratio"))
    print("| profile | group | n | tau | median rel err | p90 rel err | bias | + constant: median / p90 "
          "| x ratio: median / p90 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (_, r), (_, c), (_, q) in zip(plain.iterrows(), const.iterrows(), ratio.iterrows()):
        print(f"| {r['profile']} | {r['group']} | {r['n']} | {r['tau']:+.3f} | {r['rel_err_median']:.1%} | "
              f"{r['rel_err_p90']:.1%} | {r['bias']:+.1%} | {c['rel_err_median']:.1%} / {c['rel_err_p90']:.1%} | "
              f"{q['rel_err_median']:.1%} / {q['rel_err_p90']:.1%} |")
    df["both"] = (df["measured"] * df["again"]) ** 0.5
    second, both = _against(df, "again"), _against(df, "both")
    print("\nagainst a second whole-model pass (after the first pass and the table), and against the geometric "
          "mean of both passes; the noise ceiling is the second pass against the first:")
    print("| profile | vs 2nd pass: tau / median rel err | vs mean of both: tau / median rel err "
          "| noise ceiling: tau / median rel diff |")
    print("|---|---|---|---|")
    for label in second:
        t2, e2, tc, ec = second[label]
        tb, eb = both[label][:2]
        print(f"| {label} | {t2:+.3f} / {e2:.1%} | {tb:+.3f} / {eb:.1%} | {tc:+.3f} / {ec:.1%} |")
    print("\n| profile | measure whole (s) | fill table (s) | screen from table (s) | screen / measure | per candidate (ms) |")
    print("|---|---|---|---|---|---|")
    for label, g in df.groupby("profile", sort=False):
        m, f, s = g["measure_s"].sum(), g["fill_s"].sum(), g["screen_s"].sum()
        print(f"| {label} | {m:.2f} | {f:.2f} | {s:.3f} | {s / m:.2%} | {1e3 * s / len(g):.2f} |")
    print("\n| profile | arch | family | predicted | measured | error | parts (timed) | summary |")
    print("|---|---|---|---|---|---|---|---|")
    for _, r in df.iterrows():
        print(f"| {r['profile']} | {r['arch_id']} | {r['family']} | {r['predicted']:.4g} | {r['measured']:.4g} | "
              f"{r['predicted'] / r['measured'] - 1:+.1%} | {r['parts']} ({r['parts_timed']}) | "
              f"{r['summary'].replace('|', '/')} |")


if __name__ == "__main__":
    main()
