"""Trials per hour on the `tiny` space: local backend, Ray with 1 worker, Ray with 2 workers.

    python benchmarks/ray_throughput.py [--trials 48] [--repeats 1] [--space tiny] [--only ray1 --only ray2]

Every configuration runs the same number of trials (random sampler, same seed, so the same
architectures) in a fresh SQLite study, early stopping off so every trial does the same work.
Torch threads: local and Ray-1 use all cores for their one trial; Ray-2 gives each trial
cores / 2 threads; ``ray1-1thr`` is Ray-1 with one thread (whether a second thread helps a trial).
``--repeats R`` runs every configuration R times, alternating the order (the VM's speed drifts),
and reports each ratio and its median. Trials per hour are given for the whole run() and for the
steady state (trials ending after every worker finished its first trial, i.e. once actor
start-up, imports and first-call costs are paid), as a long search sees it. Reported per configuration: wall time of the backend's run() (Ray start and
shutdown included, and separately without them), trials per hour, and for Ray the overhead per
trial = driver-side wall time of a trial (ask -> tell) minus the worker's own evaluation time; and
per trial the evaluation time, the training part of it, and the time the worker was blocked on the
latency lock (nas/engine/device_lock.py: a trainer waiting for a measurement, a measurement for trainers).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import _repo_path  # noqa: F401  (repository root first on sys.path)

from nas.store.trial_attrs import REUSED_FROM_KEY, WORKER_KEY, metrics_of, wall_seconds

LOCK = "rw"  # set from --latency-lock


def _load() -> str:
    return os.popen("uptime").read().strip()


def steady_rate(spans_by_worker: dict) -> tuple[float, int]:
    """Trials per hour once every worker is warm: from the moment the last worker finished its
    first trial (Ray actor start, imports and first-call costs are paid by then) to the end of
    the last trial, counting the trials that ended in that window. (nan, 0) when it is empty."""
    firsts = [min(e for _, e in spans) for spans in spans_by_worker.values() if spans]
    if not firsts:
        return float("nan"), 0
    t_a = max(firsts)
    t_b = max(e for spans in spans_by_worker.values() for _, e in spans)
    n = sum(1 for spans in spans_by_worker.values() for _, e in spans if t_a < e <= t_b)
    return (3600 * n / (t_b - t_a), n) if n and t_b > t_a else (float("nan"), 0)


def run_one(space: str, backend: str, workers: int, cpus_per_trial: float, trials: int, tmp: Path,
            steps: int | None = None) -> dict:
    study, config = _study(space, backend, workers, cpus_per_trial, trials, tmp, steps)
    t_start = time.perf_counter()
    timed = _timed_run(study, config, backend, workers, cpus_per_trial)
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE" and t.user_attrs.get(REUSED_FROM_KEY) is None]
    return {
        "config": f"{backend} x{workers} ({int(cpus_per_trial)} thr/trial)",
        "trials": len(done),
        "wall_s": time.perf_counter() - t_start,
        **timed,
        "trials_per_hour": 3600 * len(done) / timed["trials_wall_s"],
        **_trial_costs(done, backend),
        **_timeline(done, backend),
    }


def _study(space: str, backend: str, workers: int, cpus_per_trial: float, trials: int, tmp: Path,
           steps: int | None):
    """A fresh SQLite study of ``space`` (train steps overridden if given) for one configuration."""
    import yaml

    from nas.engine.config import SearchConfig, load_space_checked
    from nas.store.study import create_or_load_study
    from search_spaces.space import resolve_space

    text = resolve_space(space).read_text()
    if steps:
        raw = yaml.safe_load(text)
        raw.setdefault("train", {})["steps"] = steps
        text = yaml.safe_dump(raw)
    load_space_checked(space, text=text)
    name = f"{backend}{workers}t{int(cpus_per_trial)}"
    config = SearchConfig(space=space, space_yaml=text, study=name, storage=f"sqlite:///{tmp}/{name}.db",
                          trials=trials, sampler="random", seed=0, backend=backend, workers=workers,
                          extra={"cpus_per_trial": cpus_per_trial, "asha": False, "latency_lock": LOCK}
                          if backend == "ray" else {})
    study, config, _ = create_or_load_study(config)
    return study, config


def _timed_run(study, config, backend: str, workers: int, cpus_per_trial: float) -> dict:
    """The backend's run(), with Ray's start and shutdown timed apart, and the driver's CPU time."""
    import ray
    import torch

    torch.set_num_threads(int(cpus_per_trial))
    t_start = time.perf_counter()
    ray_start = 0.0
    if backend == "ray":  # start Ray here so its start-up is timed apart from the trials
        ray.init(num_cpus=int(workers * cpus_per_trial), object_store_memory=100 * 1024 * 1024,
                 include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        ray_start = time.perf_counter() - t_start
        from nas.engine.backends.ray import run
    else:
        from nas.engine.backends.local import run
    t0 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    run(study, config, log=lambda m: None)
    trials_wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    t1 = time.perf_counter()
    if backend == "ray":
        ray.shutdown()
    return {"trials_wall_s": trials_wall, "ray_start_s": ray_start, "ray_shutdown_s": time.perf_counter() - t1,
            "driver_cpu_s": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)}


def _trial_costs(done: list, backend: str) -> dict:
    """Per trial means: evaluation, training, lock waits, latency timing; Ray's overhead (median)."""
    metrics = [metrics_of(t) for t in done]
    overhead = [wall_seconds(t) - m["eval_seconds"] for t, m in zip(done, metrics)]
    converged = [bool(m.get("latency_converged")) for m in metrics]
    return {
        "mean_eval_s": statistics.mean(m["eval_seconds"] for m in metrics),
        "mean_train_s": statistics.mean(m["train_seconds"] for m in metrics),
        "mean_lock_wait_s": statistics.mean(t.user_attrs.get(WORKER_KEY, {}).get("lock_wait_s", 0.0) for t in done),
        "mean_measure_wait_s": statistics.mean(t.user_attrs.get(WORKER_KEY, {}).get("lock_wait_measure_s", 0.0)
                                               for t in done),
        "mean_timing_s": statistics.mean(m["latency_runs"] * m["latency_ms"] / 1e3 for m in metrics),
        "converged": sum(converged) / len(converged),
        "overhead_s": statistics.median(overhead) if backend == "ray" else float("nan"),
    }


def _timeline(done: list, backend: str) -> dict:
    """Where a Ray trial's time goes outside the worker: ask -> worker start, worker end -> tell, and
    on each worker process the idle time between one trial's end and its next trial's start
    (medians); and the steady-state rate."""
    to_start, to_tell, idle = [], [], []
    by_pid: dict = {}
    for t in done:
        w = t.user_attrs.get(WORKER_KEY, {})
        if "started" in w and "ended" in w:
            to_start.append(w["started"] - t.datetime_start.timestamp())
            to_tell.append(t.datetime_complete.timestamp() - w["ended"])
            by_pid.setdefault(w.get("pid"), []).append((w["started"], w["ended"]))
    for spans in by_pid.values():
        spans.sort()
        idle += [b[0] - a[1] for a, b in itertools.pairwise(spans)]
    if backend == "local":  # one worker: the driver process itself
        by_pid = {"local": sorted((t.datetime_start.timestamp(), t.datetime_complete.timestamp()) for t in done)}
    steady = steady_rate(by_pid)
    return {
        "ask_to_start_s": statistics.median(to_start) if to_start else float("nan"),
        "end_to_tell_s": statistics.median(to_tell) if to_tell else float("nan"),
        "worker_idle_s": statistics.median(idle) if idle else float("nan"),
        "steady_per_hour": steady[0],
        "steady_trials": steady[1],
    }


def _key(r: dict) -> str:
    """``ray x1``, ``ray x2``, ``local x1``; ``ray x1 1thr`` for Ray x1 run with one thread."""
    key = r["config"].split(" (")[0]
    return f"{key} 1thr" if key == "ray x1" and r["config"].endswith("(1 thr/trial)") else key


def report(rows: list[dict]) -> None:
    """One repeat's table: throughput, where a trial's time goes, the Ray timeline, latency timing."""
    hdr = (f"{'config':<24}{'trials/h':>9}{'steady/h':>9}{'run() s':>9}{'ray start s':>12}{'shutdown s':>11}"
           f"{'eval s':>8}{'train s':>8}{'lock wait s':>12}{'overhead s':>11}{'driver cpu s':>13}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['config']:<24}{r['trials_per_hour']:>9.0f}{r['steady_per_hour']:>9.0f}{r['trials_wall_s']:>9.1f}"
              f"{r['ray_start_s']:>12.1f}{r['ray_shutdown_s']:>11.1f}{r['mean_eval_s']:>8.2f}{r['mean_train_s']:>8.2f}"
              f"{r['mean_lock_wait_s']:>12.2f}{r['overhead_s']:>11.2f}{r['driver_cpu_s']:>13.1f}")
    print("(eval, train, lock wait and overhead are per trial; steady/h counts the trials that ended after every "
          "worker had finished its first one; driver cpu is the driver process's CPU time during run(), which "
          "for local includes the trials)")
    for r in rows:
        if r["config"].startswith("ray"):
            print(f"  {r['config']:<22} ask->start {r['ask_to_start_s']:.2f} s, end->tell {r['end_to_tell_s']:.2f} s,"
                  f" worker idle between trials {r['worker_idle_s']:.2f} s (medians)")
    for r in rows:
        if r["config"].startswith("ray x2"):
            print(f"  {r['config']:<22} lock wait per trial: {r['mean_lock_wait_s']:.2f} s, of which a measurement "
                  f"waiting for the other trial to reach a step boundary {r['mean_measure_wait_s']:.2f} s")
    for r in rows:
        print(f"  {r['config']:<22} latency timed {r['mean_timing_s']:.2f} s per trial, {100 * r['converged']:.0f}% "
              "converged before latency.max_seconds")
    by = {_key(r): r for r in rows}
    for base in ("ray x1", "ray x1 1thr"):
        if base in by and "ray x2" in by:
            print(f"  ray x2 / {base} throughput: whole run "
                  f"{by['ray x2']['trials_per_hour'] / by[base]['trials_per_hour']:.2f}x, steady state "
                  f"{by['ray x2']['steady_per_hour'] / by[base]['steady_per_hour']:.2f}x (target >= 1.7x)")
    if "local x1" in by and "ray x1" in by:
        per = (by["ray x1"]["trials_wall_s"] - by["local x1"]["trials_wall_s"]) / by["ray x1"]["trials"]
        steady = 3600 / by["ray x1"]["steady_per_hour"] - 3600 / by["local x1"]["steady_per_hour"]
        print(f"  ray x1 vs local, extra wall time per trial: {per:.2f} s whole run, {steady:.2f} s steady state "
              "(target < 1 s)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="tiny")
    ap.add_argument("--trials", type=int, default=48,
                    help="trials per configuration; short runs are dominated by worker start-up")
    ap.add_argument("--repeats", type=int, default=1,
                    help="run every configuration this many times, alternating the order; medians are reported")
    ap.add_argument("--only", choices=["local", "ray1", "ray2", "ray1-1thr"], action="append",
                    help="run only these configurations [all]")
    ap.add_argument("--steps", type=int, default=None, help="override the space's train steps (shorter runs)")
    ap.add_argument("--latency-lock", default="rw", choices=["rw", "mutex", "none"],
                    help="how Ray workers keep latency measurements apart (nas/engine/device_lock.py)")
    args = ap.parse_args()
    global LOCK
    LOCK = args.latency_lock
    print(f"latency lock: {LOCK}")
    cores = os.cpu_count() or 2
    runs = [("local", "local", 1, cores), ("ray1", "ray", 1, cores), ("ray2", "ray", 2, max(1, cores // 2)),
            ("ray1-1thr", "ray", 1, 1)]  # x1 with one thread: is the second thread worth anything to a trial?
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores; load before: {_load()}")
    picked = [r for r in runs if not args.only or r[0] in args.only]
    reps: list[list[dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            # the VM's speed drifts over minutes: alternate the order so no configuration always runs first
            order = picked if rep % 2 == 0 else picked[::-1]
            got = {}
            for key, backend, workers, cpt in order:
                sub = Path(tmp) / f"rep{rep}"
                sub.mkdir(exist_ok=True)
                got[key] = run_one(args.space, backend, workers, cpt, args.trials, sub, args.steps)
                print(f"  repeat {rep + 1}/{args.repeats} done {got[key]}; load: {_load()}", flush=True)
            reps.append([got[k] for k, *_ in picked])
    steps = f", train steps {args.steps}" if args.steps else ""
    print(f"\n{args.trials} trials of space {args.space!r}{steps}, early stopping off, {args.repeats} repeat(s)")
    for rep, rows in enumerate(reps):
        print(f"\nrepeat {rep + 1}" + (" (order reversed)" if rep % 2 else ""))
        report(rows)
    keys = [_key(r) for r in reps[0]]
    if args.repeats > 1:
        print(f"\nmedians over {args.repeats} repeats:")
        for i, k in enumerate(keys):
            print(f"  {k:<8} trials/h whole run {statistics.median(r[i]['trials_per_hour'] for r in reps):6.0f},"
                  f" steady state {statistics.median(r[i]['steady_per_hour'] for r in reps):6.0f}")
    for base in ("ray x1", "ray x1 1thr"):
        if base not in keys or "ray x2" not in keys:
            continue
        i1, i2 = keys.index(base), keys.index("ray x2")
        for what, field in (("whole run", "trials_per_hour"), ("steady state", "steady_per_hour")):
            ratios = [r[i2][field] / r[i1][field] for r in reps]
            print(f"ray x2 / {base}, {what}: {', '.join(f'{x:.2f}' for x in ratios)} -> median "
                  f"{statistics.median(ratios):.2f}x (target >= 1.7x)")
    print(f"load after: {_load()}")


if __name__ == "__main__":
    main()
