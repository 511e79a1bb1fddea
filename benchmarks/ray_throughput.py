"""Trials per hour on the `tiny` space: local backend, Ray with 1 worker, Ray with 2 workers.

    python benchmarks/ray_throughput.py [--trials 8] [--space tiny]

Every configuration runs the same number of trials (random sampler, same seed, so the same
architectures) in a fresh SQLite study, early stopping off so every trial does the same work.
Torch threads: local and Ray-1 use all cores for their one trial; Ray-2 gives each trial
cores / 2 threads. Reported per configuration: wall time of the backend's run() (Ray start and
shutdown included, and separately without them), trials per hour, and for Ray the overhead per
trial = driver-side wall time of a trial (ask -> tell) minus the worker's own evaluation time; and
per trial the evaluation time, the training part of it, and the time the worker was blocked on the
latency lock (nas/locks.py: a trainer waiting for a measurement, a measurement for trainers).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import _repo_path  # noqa: E402, F401  (repository root first; benchmarks/kernels.py off the path)


LOCK = "rw"  # set from --latency-lock


def _load() -> str:
    return os.popen("uptime").read().strip()


def run_one(space: str, backend: str, workers: int, cpus_per_trial: float, trials: int, tmp: Path,
            steps: int | None = None) -> dict:
    import ray
    import yaml

    from nas.config import SearchConfig, load_space_checked
    from nas.study import create_or_load_study
    from search_spaces.space import _resolve

    text = _resolve(space).read_text()
    if steps:
        raw = yaml.safe_load(text)
        raw.setdefault("train", {})["steps"] = steps
        text = yaml.safe_dump(raw)
    load_space_checked(space, text=text)
    name = f"{backend}{workers}"
    config = SearchConfig(space=space, space_yaml=text, study=name, storage=f"sqlite:///{tmp}/{name}.db",
                          trials=trials, sampler="random", seed=0, backend=backend, workers=workers,
                          extra={"cpus_per_trial": cpus_per_trial, "asha": False, "latency_lock": LOCK}
                          if backend == "ray" else {})
    study, config, _ = create_or_load_study(config)
    import torch

    torch.set_num_threads(int(cpus_per_trial))
    t_start = time.perf_counter()
    ray_start = 0.0
    if backend == "ray":  # start Ray here so its start-up is timed apart from the trials
        ray.init(num_cpus=int(workers * cpus_per_trial), object_store_memory=100 * 1024 * 1024,
                 include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        ray_start = time.perf_counter() - t_start
        from nas.backends.ray import run
    else:
        from nas.backends.local import run
    t0 = time.perf_counter()
    run(study, config, log=lambda m: None)
    trials_wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    if backend == "ray":
        ray.shutdown()
    shutdown = time.perf_counter() - t1
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE" and t.user_attrs.get("reused_from") is None]
    evals = [t.user_attrs["metrics"]["eval_seconds"] for t in done]
    overhead = [t.user_attrs["wall_seconds"] - t.user_attrs["metrics"]["eval_seconds"] for t in done]
    trains = [t.user_attrs["metrics"]["train_seconds"] for t in done]
    waits = [t.user_attrs.get("worker", {}).get("lock_wait_s", 0.0) for t in done]
    timing = [t.user_attrs["metrics"]["latency_runs"] * t.user_attrs["metrics"]["latency_ms"] / 1e3 for t in done]
    converged = [bool(t.user_attrs["metrics"].get("latency_converged")) for t in done]
    # where a Ray trial's time goes outside the worker: ask -> worker start, worker end -> tell, and
    # on each worker process the idle time between one trial's end and its next trial's start
    to_start, to_tell, idle = [], [], []
    by_pid: dict = {}
    for t in done:
        w = t.user_attrs.get("worker", {})
        if "started" in w and "ended" in w:
            to_start.append(w["started"] - t.datetime_start.timestamp())
            to_tell.append(t.datetime_complete.timestamp() - w["ended"])
            by_pid.setdefault(w.get("pid"), []).append((w["started"], w["ended"]))
    for spans in by_pid.values():
        spans.sort()
        idle += [b[0] - a[1] for a, b in itertools.pairwise(spans)]
    return {
        "config": f"{backend} x{workers} ({int(cpus_per_trial)} thr/trial)",
        "trials": len(done),
        "wall_s": time.perf_counter() - t_start,
        "trials_wall_s": trials_wall,
        "ray_start_s": ray_start,
        "ray_shutdown_s": shutdown,
        "trials_per_hour": 3600 * len(done) / trials_wall,
        "mean_eval_s": statistics.mean(evals),
        "mean_train_s": statistics.mean(trains),
        "mean_lock_wait_s": statistics.mean(waits),
        "mean_timing_s": statistics.mean(timing),
        "converged": sum(converged) / len(converged),
        "ask_to_start_s": statistics.median(to_start) if to_start else float("nan"),
        "end_to_tell_s": statistics.median(to_tell) if to_tell else float("nan"),
        "worker_idle_s": statistics.median(idle) if idle else float("nan"),
        "overhead_s": statistics.median(overhead) if backend == "ray" else float("nan"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="tiny")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--only", choices=["local", "ray1", "ray2"], action="append")
    ap.add_argument("--steps", type=int, default=None, help="override the space's train steps (shorter runs)")
    ap.add_argument("--latency-lock", default="rw", choices=["rw", "mutex", "none"],
                    help="how Ray workers keep latency measurements apart (nas/locks.py)")
    args = ap.parse_args()
    global LOCK
    LOCK = args.latency_lock
    print(f"latency lock: {LOCK}")
    cores = os.cpu_count() or 2
    runs = [("local", "local", 1, cores), ("ray1", "ray", 1, cores), ("ray2", "ray", 2, max(1, cores // 2))]
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores; load before: {_load()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for key, backend, workers, cpt in runs:
            if args.only and key not in args.only:
                continue
            rows.append(run_one(args.space, backend, workers, cpt, args.trials, Path(tmp), args.steps))
            print(f"  done {rows[-1]}; load: {_load()}", flush=True)
    steps = f", train steps {args.steps}" if args.steps else ""
    print(f"\n{args.trials} trials of space {args.space!r}{steps}, early stopping off\n")
    hdr = (f"{'config':<26}{'trials/h':>10}{'run() s':>10}{'ray start s':>13}{'shutdown s':>12}{'eval s/trial':>14}"
           f"{'train s/trial':>15}{'lock wait s/trial':>19}{'overhead s/trial':>18}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['config']:<26}{r['trials_per_hour']:>10.0f}{r['trials_wall_s']:>10.1f}{r['ray_start_s']:>13.1f}"
              f"{r['ray_shutdown_s']:>12.1f}{r['mean_eval_s']:>14.2f}{r['mean_train_s']:>15.2f}"
              f"{r['mean_lock_wait_s']:>19.2f}{r['overhead_s']:>18.2f}")
    if any(r["config"].startswith("ray") for r in rows):
        print("\nRay timeline per trial (medians): ask -> worker start, worker end -> tell, and a worker's idle time "
              "between two trials")
        for r in rows:
            if r["config"].startswith("ray"):
                print(f"  {r['config']:<24} ask->start {r['ask_to_start_s']:.2f} s   end->tell {r['end_to_tell_s']:.2f} s"
                      f"   worker idle between trials {r['worker_idle_s']:.2f} s")
    print("\nLatency timing per trial (runs x median, warm-up excluded) and share of measurements whose spread "
          "converged under the target before latency.max_seconds:")
    for r in rows:
        print(f"  {r['config']:<24} {r['mean_timing_s']:.2f} s timed, {100 * r['converged']:.0f}% converged")
    by = {r["config"].split(" (")[0]: r for r in rows}
    if "ray x1" in by and "ray x2" in by:
        print(f"\nray x2 / ray x1 throughput: {by['ray x2']['trials_per_hour'] / by['ray x1']['trials_per_hour']:.2f}x "
              f"(target >= 1.7x)")
    if "local x1" in by and "ray x1" in by:
        per = (by["ray x1"]["trials_wall_s"] - by["local x1"]["trials_wall_s"]) / by["ray x1"]["trials"]
        print(f"ray x1 vs local, extra wall time per trial: {per:.2f} s (target < 1 s)")
    print(f"load after: {_load()}")


if __name__ == "__main__":
    main()
