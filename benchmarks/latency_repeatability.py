"""Latency repeatability: the same architectures timed in two separate processes.

    .venv/bin/python benchmarks/latency_repeatability.py [--space seq-hybrid] [--n 20] [--seed 0]

Samples N architectures of a space, then runs two fresh Python processes, one after the other,
each timing every architecture with the space's latency settings (`evaluators.latency`). Prints
per-architecture latencies and spreads, and the agreement of the two runs: Kendall tau and
Spearman rho of the rankings, and the median relative difference |a - b| / mean(a, b).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

import _repo_path  # noqa: F401  (repository root first on sys.path)

WORKER = r"""
import json, sys, torch
from nas.engine.config import load_space_checked
from evaluators.latency import LatencyConfig, measure_latency
from search_spaces import ArchSpec, build_model
space = load_space_checked(sys.argv[1])
cfg = LatencyConfig.from_dict(space.latency)
out = []
for line in open(sys.argv[2]):
    arch = ArchSpec.from_json(line)
    torch.manual_seed(0)
    model = build_model(arch, space.io)
    r = measure_latency(model, space.io, cfg)
    out.append({"arch_id": arch.arch_id, "latency_ms": r["latency_ms"], "spread": r["latency_spread"]})
json.dump(out, open(sys.argv[3], "w"))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="seq-hybrid")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import numpy as np
    import optuna
    from scipy.stats import kendalltau, spearmanr

    import search_spaces
    from nas.engine.config import load_space_checked

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = load_space_checked(args.space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed))
    archs = {}
    while len(archs) < args.n:
        t = study.ask()
        a = search_spaces.sample(space, t)
        archs[a.arch_id] = a
        study.tell(t, 0.0)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}; "
          f"space {args.space}, {args.n} architectures, latency settings {space.latency}")
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "archs.jsonl")
        with open(src, "w") as f:
            for a in archs.values():
                f.write(a.to_json() + "\n")
        runs = []
        for i in range(2):
            dst = os.path.join(d, f"run{i}.json")
            subprocess.run([sys.executable, "-c", WORKER, args.space, src, dst], check=True)
            runs.append(json.load(open(dst)))
    a = np.array([r["latency_ms"] for r in runs[0]])
    b = np.array([r["latency_ms"] for r in runs[1]])
    rel = np.abs(a - b) / ((a + b) / 2)
    print()
    print("| arch | summary | run 1 ms (spread) | run 2 ms (spread) | rel. diff |")
    print("|---|---|---|---|---|")
    for (aid, arch), r1, r2, rd in zip(archs.items(), runs[0], runs[1], rel):
        print(f"| {aid} | {arch.summary()[:60]} | {r1['latency_ms']:.3f} ({r1['spread']:.3f}) | "
              f"{r2['latency_ms']:.3f} ({r2['spread']:.3f}) | {rd:.3f} |")
    print()
    print(f"Kendall tau {kendalltau(a, b)[0]:.3f}, Spearman rho {spearmanr(a, b)[0]:.3f}, "
          f"median relative difference {np.median(rel):.3f}, max {rel.max():.3f} (n = {len(a)})")


if __name__ == "__main__":
    main()
