"""benchmarks/search_efficiency.py: its hypervolume curves against Optuna's own hypervolume, its
ladder simulation against the promotion rule applied by hand, and its cache (measured once)."""

import importlib.util
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("search_efficiency", BENCH / "search_efficiency.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:  # benchmarks/_repo_path.py takes the folder off the path itself when first imported
        if str(BENCH) in sys.path:
            sys.path.remove(str(BENCH))
    return mod


def _fake_measure(arch, settings):
    """Deterministic metrics from the architecture's id: no training."""
    h = zlib.crc32(arch.arch_id.encode())
    acc, lat, rung = (h % 997) / 997, 0.5 + (h // 997 % 991) / 991, ((h >> 7) % 983) / 983
    return {"arch_id": arch.arch_id, "summary": arch.summary(), "eval_seconds": 0.0,
            "metrics": {"accuracy": acc, "latency_ms": lat}, "rung": {"train@25": rung}}


def test_hypervolume_curves_match_optunas_hypervolume(bench):
    from optuna._hypervolume import compute_hypervolume

    rng = np.random.default_rng(0)
    rows = []
    for seed in range(2):
        for k in range(12):
            state = "PRUNED" if k % 5 == 4 else "COMPLETE"
            acc, lat = rng.uniform(0.2, 1.0), rng.uniform(0.5, 3.0)
            rows.append({"space": "tiny", "ladder": "off", "sampler": "random", "seed": seed, "trial": k,
                         "state": state, "v0": acc if state == "COMPLETE" else np.nan,
                         "v1": lat if state == "COMPLETE" else np.nan, "train_cost": 1.0})
    df = pd.DataFrame(rows)
    curves = bench.hv_curves(df)
    done = df[df.state == "COMPLETE"]
    pts = np.c_[-done.v0, done.v1]  # tiny: accuracy maximized, latency minimized
    ref = pts.max(axis=0) + 0.1 * (pts.max(axis=0) - pts.min(axis=0))
    for seed in range(2):
        run = df[df.seed == seed]
        c = curves[curves.seed == seed].set_index("trial")
        for k in (1, 5, 12):
            first = run.head(k)
            first = first[first.state == "COMPLETE"]
            want = compute_hypervolume(np.c_[-first.v0, first.v1].astype(float), ref)
            assert c.loc[k, "hv"] == pytest.approx(want, rel=1e-12)
        assert (np.diff(c["hv"].to_numpy()) >= 0).all()  # a front never loses volume


def test_efficiency_ratio_reads_the_median_curves(bench):
    rows = []
    for seed, shift in enumerate((0.0, 0.1, 0.2)):
        for k in range(1, 121):
            rows.append({"space": "s", "ladder": "off", "sampler": "random", "seed": seed, "trial": k,
                         "hv": k / 120 + shift})
        for k in range(1, 41):
            rows.append({"space": "s", "ladder": "off", "sampler": "fast", "seed": seed, "trial": k,
                         "hv": 3 * k / 120 + shift})
    table = bench.summarize(pd.DataFrame(rows), trials=40, random_trials=120, default="fast")
    # fast's median HV at 40 trials is 1.1 (seed 1); random's median curve k/120 + 0.1 reaches it at k = 120
    line = next(x for x in table.splitlines() if x.startswith("| **fast**"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[5:] == ["-", "120", "3.00", "40"]


def test_ladder_runs_prune_as_the_promotion_rule_says_and_reuse_the_cache(bench, tmp_path, monkeypatch):
    from evaluators.ladder import promote

    calls = []
    monkeypatch.setattr(bench, "_measure", lambda arch, s: calls.append(arch.arch_id) or _fake_measure(arch, s))
    job = {"space": "tiny", "sampler": "random", "seed": 3, "trials": 16}
    off = pd.read_csv(bench.run_one({**job, "ladder": "off"}, tmp_path))
    measured = len(calls)
    on = pd.read_csv(bench.run_one({**job, "ladder": "on"}, tmp_path))
    assert len(calls) == measured == off.arch_id.nunique()  # the second run read the cache only
    assert not on.live.any() and off.live.sum() == measured
    assert list(on.arch_id) == list(off.arch_id)  # random search proposes the same architectures
    cache = bench.Cache(tmp_path / "cache", "tiny")
    history, seen, want = [], set(), []
    for arch_id in on.arch_id:  # the engine's rule (keep 0.5, min_trials 4) applied by hand
        if arch_id in seen:
            want.append("COMPLETE")
            continue
        score = cache.get(arch_id)["rung"]["train@25"]
        ok = promote(score, history, 0.5, 4)
        history.append(score)
        want.append("COMPLETE" if ok else "PRUNED")
        seen |= {arch_id} if ok else set()
    assert list(on.state) == want and "PRUNED" in want
    assert (on[on.state == "PRUNED"].train_cost == 0.25).all()
