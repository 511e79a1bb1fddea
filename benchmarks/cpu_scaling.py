"""How much two processes get out of this machine's cores: the ceiling for running trials in parallel.

    python benchmarks/cpu_scaling.py [--space tiny] [--trials 6] [--repeats 3]

The work is what a trial of ``--space`` does (build, proxy-train and time the first ``--trials``
architectures the random sampler draws, seed 0), in a fresh Python process. It is run

- alone with 1 torch thread, and alone with all cores' threads (what ``local`` / Ray x1 do);
- as 2 processes at once with 1 thread each (what Ray x2 does on 2 cores), no Ray and no lock.

Parallel speed-up = work done per second by the two concurrent processes / by the best single process.
On a machine whose cores are independent it is close to 2; it bounds what ``ray_throughput.py``'s
Ray x2 / Ray x1 ratio can reach here, since Ray adds its driver and the latency lock on top.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _repo_path  # noqa: F401  (repository root first on sys.path)

ROOT = Path(__file__).resolve().parent.parent

WORK = r"""
import sys, time, torch, optuna
torch.set_num_threads(int(sys.argv[1]))
import search_spaces
from nas.engine.config import load_checked
from evaluators.evaluation import evaluate
optuna.logging.set_verbosity(optuna.logging.WARNING)
checked = load_checked(sys.argv[2])  # read once: the space and its settings
space, settings = checked.space, checked.settings
study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
archs = [search_spaces.sample(space, study.ask()) for _ in range(int(sys.argv[3]))]
evaluate(archs[0], settings)  # first-call costs (lazy init, allocator) outside the timing
t0 = time.perf_counter()
for a in archs:
    evaluate(a, settings)
print(time.perf_counter() - t0)
"""


def _launch(threads: int, space: str, trials: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.Popen([sys.executable, "-c", WORK, str(threads), space, str(trials)], env=env,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)


def _seconds(procs: list[subprocess.Popen]) -> list[float]:
    out = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"worker failed with exit code {p.returncode}")
        out.append(float(stdout.strip().splitlines()[-1]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="tiny")
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cores = os.cpu_count() or 2
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores; "
          f"load before: {os.popen('uptime').read().strip()}")
    alone1, alone_all, pair = [], [], []
    for rep in range(args.repeats):
        steps = [("alone, 1 thread", lambda: alone1.append(_seconds([_launch(1, args.space, args.trials)])[0])),
                 (f"alone, {cores} threads",
                  lambda: alone_all.append(_seconds([_launch(cores, args.space, args.trials)])[0])),
                 ("2 at once, 1 thread each",
                  lambda: pair.append(_seconds([_launch(1, args.space, args.trials) for _ in range(2)])))]
        for name, step in (steps if rep % 2 == 0 else steps[::-1]):  # alternate: the VM's speed drifts
            t = time.perf_counter()
            step()
            print(f"  repeat {rep + 1}: {name} done in {time.perf_counter() - t:.1f} s", flush=True)
    n = args.trials
    a1, aa = statistics.median(alone1), statistics.median(alone_all)
    # two processes did 2n trials; the pair finished when the slower one did
    pair_rate = statistics.median(2 * n / max(p) for p in pair)
    best = max(n / a1, n / aa)
    print(f"\n{n} trials of {args.space!r} per process (after one untimed warm-up trial), {args.repeats} repeats, medians\n")
    print("| run | seconds | trials / s |")
    print("|---|---|---|")
    print(f"| alone, 1 thread | {a1:.2f} | {n / a1:.2f} |")
    print(f"| alone, {cores} threads | {aa:.2f} | {n / aa:.2f} |")
    print(f"| 2 at once, 1 thread each | {statistics.median(max(p) for p in pair):.2f} (slower of the two) "
          f"| {pair_rate:.2f} (both) |")
    print(f"\nparallel speed-up, 2 processes vs the best single process: {pair_rate / best:.2f}x")
    print(f"each of 2 concurrent processes ran at {statistics.median(a1 / statistics.mean(p) for p in pair):.2f}x "
          "the speed of one alone (1 thread)")
    print(f"load after: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
