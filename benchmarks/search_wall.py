"""Wall time of the default search (`make search` runs `nas search --space tiny --study demo`)
and the engine's overhead per trial: time not spent inside evaluation.

    .venv/bin/python benchmarks/search_wall.py [--space tiny] [--trials N] [--repeats 1]

Prints: total wall time of the command, interpreter + import start-up, and per trial the
mean time inside `evaluate()` (build, train, time) versus the engine's own time (sampling,
storage writes, dedup lookups, progress), all from one fresh SQLite study in a temp dir.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _repo_path  # noqa: F401  (repository root first on sys.path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="tiny")
    ap.add_argument("--trials", type=int, default=None, help="default: the space's own budget")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    import nas

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
          f"load average {os.getloadavg()[0]:.2f} at start")
    t0 = time.perf_counter()
    # interpreter + every import a search needs (torch, timm, optuna, the mixers)
    subprocess.run([sys.executable, "-c", "import nas.cli.base, nas.engine.config, evaluators.evaluation, search_spaces.mixers"],
                   check=True)
    startup = time.perf_counter() - t0
    rows = []
    for rep in range(args.repeats):
        with tempfile.TemporaryDirectory() as d:
            cmd = [sys.executable, "-m", "nas.cli.base", "search", "--space", args.space, "--study", "demo"]
            if args.trials:
                cmd += ["--trials", str(args.trials)]
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=d, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            df = nas.load_trials(f"sqlite:///{Path(d) / 'results' / 'demo.db'}", "demo")
            done = df[df.state.isin(["COMPLETE", "FAIL", "PRUNED"])]
            trial_s = done.duration_s.sum()
            # a trial that reused a twin's metrics carries the twin's eval_seconds: it evaluated nothing
            evaluated = done[done.reused_from.isna()]
            eval_s = evaluated.eval_seconds.fillna(0).sum() if "eval_seconds" in done else 0.0
            n = len(done)
            rows.append((wall, n, trial_s, eval_s))
            print(f"run {rep + 1}: {n} trials ({len(done) - len(evaluated)} reused a twin's metrics), wall "
                  f"{wall:.1f} s; inside trials {trial_s:.1f} s, of which evaluation {eval_s:.1f} s")
    wall, n, trial_s, eval_s = (sum(r[i] for r in rows) / len(rows) for i in range(4))
    per_trial_engine = (trial_s - eval_s) / n
    outside = wall - trial_s
    print()
    print("| space | trials | wall (s) | outside trials (s) | of which imports (s) | evaluation / trial (s) | engine overhead / trial (s) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.space} | {n:.0f} | {wall:.1f} | {outside:.1f} | {startup:.1f} | {eval_s / n:.2f} | {per_trial_engine:.3f} |")
    print()
    print("outside trials = wall - trial durations: interpreter start, imports (timed on their own in a separate "
          "process, so the two columns can disagree by a second), study creation, stale-trial check and the final "
          "table. engine overhead / trial = trial duration - time inside evaluate() (sampling, dedup lookup, "
          "user-attr writes, heartbeat thread).")


if __name__ == "__main__":
    main()
