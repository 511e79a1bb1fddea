"""Search efficiency: hypervolume against trials for each sampler, on built-in spaces, ladder off and on.

    nice .venv/bin/python benchmarks/search_efficiency.py [--spaces tiny signal seq-hybrid]
        [--samplers random nsga2 tpe gp tpe-nogroup] [--seeds 3] [--trials 40] [--random-trials 120]
        [--workers 2] [--out benchmarks/search-efficiency]
    nice .venv/bin/python benchmarks/search_efficiency.py --check-live tiny --trials 24   # cache vs live
    nice .venv/bin/python benchmarks/search_efficiency.py --summarize                      # table + PNG only

Each run is one sampler with one seed on one space: it asks the sampler for a trial, draws the
architecture with the engine's own code (``search_spaces.sample``), and tells the sampler the
architecture's objective values, as ``nas search`` does; the samplers are built by
``nas.store.study.make_sampler`` (the CLI's), so "nsga2" is the engine's NSGA-II with its population sized
to the budget. Random search runs ``--random-trials`` trials, the others ``--trials``.

**Evaluations come from a cache of measured architectures**, as tabular NAS benchmarks do: the first
time any run meets an architecture it is evaluated live (the space's proxy training and latency
timing, ``evaluators.evaluation``, one thread per process), and the metrics it got are stored in
``<out>/cache/<space>.*.jsonl``; every later run that meets it reads them. So every run ranks the
same measured numbers, and the table is affordable on 2 cores. ``--check-live SPACE`` checks on one
space that a live ``nas search`` (random sampler, same seed) proposes the same architectures and
gets the same accuracies, latencies within timing noise and a matching hypervolume curve.

**Ladder on** adds one ``train`` rung at a quarter of the proxy's steps (keep 0.5, min_trials 4,
``evaluators.ladder.promote``, the engine's rule): the cache stores each architecture's accuracy at
that step, so a run with the ladder decides as the engine would and a pruned trial costs a quarter
of a training. Hypervolumes use one reference point per space (worst value over every finished
trial of every run of that space, plus 10% of the range: ``nas.results.volume.reference_point``),
computed with ``nas.hypervolume_of``. The tables give the median and the spread (min-max) over
seeds, and the sample-efficiency ratio: how many trials random search needs (its median curve) to
reach each sampler's median hypervolume at ``--trials``, divided by ``--trials``.
"""

from __future__ import annotations

import argparse
import csv
import functools
import glob
import json
import os
import platform
import sys
import time
from pathlib import Path

import _repo_path  # noqa: F401  (repository root first on sys.path)

OUT = Path(__file__).resolve().parent / "search-efficiency"
SPACES = OUT / "spaces"  # benchmark-only spaces (tiny-large), named by their file's stem


def _source(space: str) -> str:
    """A built-in space's name, or the file of a benchmark-only space of that name."""
    path = SPACES / f"{space}.yaml"
    return str(path) if path.exists() else space
RUNG_FRACTION = 4  # the ladder's train rung: steps // 4
FIELDS = ["space", "ladder", "sampler", "seed", "trial", "state", "v0", "v1", "arch_id", "live", "train_cost",
          "eval_seconds"]


# ------------------------------------------------------------------------------------------- cache
class Cache:
    """Metrics of measured architectures of one space, keyed by arch_id; each process appends to
    its own file, and a miss re-reads the others' (another worker may have measured it)."""

    def __init__(self, folder: Path, space: str):
        self.folder, self.space = folder, space
        folder.mkdir(parents=True, exist_ok=True)
        self.own = folder / f"{space}.{os.getpid()}.jsonl"
        self.entries: dict[str, dict] = {}
        self.reload()

    def reload(self) -> None:
        for path in glob.glob(str(self.folder / f"{self.space}.*.jsonl")):
            with open(path) as f:
                for line in f:
                    if line.strip():
                        e = json.loads(line)
                        self.entries[e["arch_id"]] = e

    def get(self, arch_id: str):
        if arch_id not in self.entries:
            self.reload()
        return self.entries.get(arch_id)

    def put(self, entry: dict) -> None:
        self.entries[entry["arch_id"]] = entry
        with open(self.own, "a") as f:
            f.write(json.dumps(entry) + "\n")


def _settings(space):
    """The space's evaluation settings plus the benchmark's train rung (never pruning here: the
    history is empty), so one live evaluation gives both the rung's score and the full metrics."""
    import dataclasses

    from evaluators.evaluation import EvalSettings
    from evaluators.ladder import Rung

    settings = EvalSettings.from_space(space)
    rung = Rung(kind="train", steps=max(1, settings.train.steps // RUNG_FRACTION), keep=0.5, min_trials=4)
    return dataclasses.replace(settings, ladder=(rung,)), rung


def _measure(arch, settings) -> dict:
    from evaluators.errors import TrialFailure
    from evaluators.evaluation import evaluate

    t0 = time.perf_counter()
    try:
        metrics = evaluate(arch, settings, ladder_history={})
    except TrialFailure as e:
        return {"arch_id": arch.arch_id, "error": str(e), "eval_seconds": time.perf_counter() - t0}
    keep = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {"arch_id": arch.arch_id, "summary": arch.summary(), "metrics": keep,
            "rung": metrics.get("ladder_values", {}), "eval_seconds": metrics.get("eval_seconds", 0.0)}


# -------------------------------------------------------------------------------------------- runs
def _sampler(name: str, seed: int, trials: int):
    """The engine's sampler for a name it knows (nas.store.study.make_sampler); benchmark candidates else."""
    import optuna

    from nas.engine.config import SAMPLERS, SearchConfig
    from nas.store.study import make_sampler

    if name in SAMPLERS:
        return make_sampler(SearchConfig(space="", space_yaml="", study="bench", storage="", trials=trials,
                                         sampler=name, seed=seed))
    if name == "tpe-nogroup":  # the engine's "tpe" before it grouped the conditional parameters
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if name == "tpe-s5":  # the engine's "tpe" with 5 random start-up trials instead of 10
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=5)
    raise SystemExit(f"unknown sampler {name!r}")


def run_one(job: dict, out: Path, runs: Path | None = None) -> Path:
    """One (space, ladder, sampler, seed) run over the cache under ``out``; its trials go to
    <runs>/<name>.csv (default <out>/runs)."""
    import optuna
    from optuna.trial import TrialState

    import evaluators
    import search_spaces
    from evaluators.ladder import promote

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import torch

    torch.set_num_threads(1)
    space = evaluators.load_space(_source(job["space"]))
    settings, rung = _settings(space)
    cache = Cache(out / "cache", job["space"])
    names = list(space.objectives)
    study = optuna.create_study(directions=[space.objectives[n] for n in names],
                                sampler=_sampler(job["sampler"], job["seed"], job["trials"]))
    rows, seen, history = [], {}, []
    for _ in range(job["trials"]):
        trial = study.ask()
        arch = search_spaces.sample(space, trial)
        entry, live = cache.get(arch.arch_id), False
        if entry is None:
            entry, live = _measure(arch, settings), True
            cache.put(entry)
        row = {**{k: job[k] for k in ("space", "ladder", "sampler", "seed")}, "trial": trial.number,
               "arch_id": arch.arch_id, "live": live, "eval_seconds": round(entry["eval_seconds"], 3),
               "v0": "", "v1": ""}
        if "error" in entry:
            study.tell(trial, state=TrialState.FAIL)
            row.update(state="FAIL", train_cost=1.0)
        elif arch.arch_id in seen:  # a twin: the engine reuses the earlier trial's metrics
            study.tell(trial, seen[arch.arch_id])
            row.update(state="COMPLETE", train_cost=0.0, v0=seen[arch.arch_id][0], v1=seen[arch.arch_id][1])
        elif job["ladder"] == "on" and not promote(float(entry["rung"][rung.name]), history, rung.keep,
                                                    rung.min_trials):
            history.append(float(entry["rung"][rung.name]))
            study.tell(trial, state=TrialState.PRUNED)
            row.update(state="PRUNED", train_cost=1 / RUNG_FRACTION)
        else:
            if job["ladder"] == "on":
                history.append(float(entry["rung"][rung.name]))
            values = [float(entry["metrics"][n]) for n in names]
            seen[arch.arch_id] = values
            study.tell(trial, values)
            row.update(state="COMPLETE", train_cost=1.0, v0=values[0], v1=values[1])
        rows.append(row)
    path = (runs or out / "runs") / f"{_run_name(job)}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)  # a run is saved whole or not at all: a rerun skips the finished ones
    return path


def _run_name(job: dict) -> str:
    return f"{job['space']}-ladder_{job['ladder']}-{job['sampler']}-s{job['seed']}"


def _job(args) -> tuple:
    job, out = args
    t0 = time.perf_counter()
    path = run_one(job, out)
    return job, path, time.perf_counter() - t0


def run_all(args) -> None:
    import multiprocessing as mp  # fork: nothing heavy is imported yet; spawn would lose the path set above

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one training per core; the workers inherit it

    jobs = []
    for seed in range(args.seeds):  # seed-major: an interrupted benchmark has every sampler at some seeds
        for space in args.spaces:
            for ladder in args.ladder:
                for sampler in args.samplers:
                    n = args.random_trials if sampler == "random" else args.trials
                    jobs.append({"space": space, "ladder": ladder, "sampler": sampler, "seed": seed, "trials": n})
    todo = [j for j in jobs if not (args.out / "runs" / f"{_run_name(j)}.csv").exists()]
    print(f"{len(jobs)} runs, {len(jobs) - len(todo)} already done; {args.workers} worker(s)", flush=True)
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(args.workers, maxtasksperchild=1) as pool:
        for i, (job, _path, secs) in enumerate(pool.imap_unordered(_job, [(j, args.out) for j in todo]), 1):
            print(f"[{i}/{len(todo)}] {_run_name(job)}: {secs:.0f}s ({time.perf_counter() - t0:.0f}s in all)",
                  flush=True)


# --------------------------------------------------------------------------------------- analysis
def load_runs(out: Path):
    import pandas as pd

    files = sorted(glob.glob(str(out / "runs" / "*.csv")))
    if not files:
        raise SystemExit(f"no runs under {out / 'runs'}")
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


@functools.lru_cache(maxsize=None)
def _directions(space_name: str) -> dict:
    """``{"v0": direction, "v1": direction}``: the space's objectives in the order the runs store them."""
    import evaluators

    space = evaluators.load_space(_source(space_name))
    return {f"v{i}": d for i, d in enumerate(space.objectives.values())}


def _minimized(values, directions: dict):
    """Values (n, m) in the objectives' own senses, as minimization columns."""
    import numpy as np

    return np.asarray(values, float) * np.array([-1.0 if d == "maximize" else 1.0 for d in directions.values()])


def _reference(df, directions: dict):
    """The engine's default reference point (``nas.results.volume.reference_point``: the worst finished
    value plus 10% of the range) over every finished row of ``df``, as a minimization vector."""
    from nas.results.volume import reference_point

    ref = reference_point(df, directions)
    return _minimized([[ref[c] for c in directions]], directions)[0]


def hv_curves(df):
    """Per run, the hypervolume after each trial (one reference point per space, over all its runs).
    Returns a frame with space, ladder, sampler, seed, trial (1-based count), hv, cost (trainings so far)."""
    import numpy as np
    import pandas as pd

    from nas.results.volume import hypervolume_of

    out = []
    for space_name, sdf in df.groupby("space"):
        directions = _directions(space_name)
        ref = _reference(sdf, directions)
        for (ladder, sampler, seed), run in sdf.groupby(["ladder", "sampler", "seed"]):
            run = run.sort_values("trial")
            vals = _minimized(run[list(directions)], directions)
            complete = (run["state"] == "COMPLETE").to_numpy()
            cost = np.cumsum(run["train_cost"].to_numpy(float))
            for k in range(1, len(run) + 1):
                hv = hypervolume_of(vals[:k][complete[:k]], ref) if complete[:k].any() else 0.0
                out.append({"space": space_name, "ladder": ladder, "sampler": sampler, "seed": seed,
                            "trial": k, "hv": hv, "cost": cost[k - 1], "ref0": ref[0], "ref1": ref[1]})
    return pd.DataFrame(out)


def _median_curve(curves, space, ladder, sampler):
    c = curves[(curves.space == space) & (curves.ladder == ladder) & (curves.sampler == sampler)]
    return c.groupby("trial")["hv"].agg(["median", "min", "max", "count"])


def _first_reaching(median_curve, target: float):
    hit = median_curve.index[median_curve["median"] >= target - 1e-12]
    return int(hit[0]) if len(hit) else None


def _trainings(curves, space, ladder, sampler, k: int) -> str:
    """Median proxy trainings spent by trial ``k`` (a twin costs none, a pruned trial a quarter)."""
    if "cost" not in curves:
        return "-"
    c = curves[(curves.space == space) & (curves.ladder == ladder) & (curves.sampler == sampler) & (curves.trial == k)]
    return f"{c.cost.median():.1f}"


def summarize(curves, trials: int, random_trials: int, default: str) -> str:
    lines = []
    for space in sorted(curves.space.unique()):
        for ladder in sorted(curves[curves.space == space].ladder.unique()):
            rnd = _median_curve(curves, space, ladder, "random")
            r_end = rnd["median"].iloc[-1] if len(rnd) else float("nan")
            lines += [f"\n### {space}, ladder {ladder}\n",
                      f"Random search's median hypervolume at {len(rnd)} trials: {r_end:.4f}.\n",
                      f"| sampler | seeds | HV @10 | HV @20 | HV @{trials} median [min, max] | trainings @{trials} "
                      f"| random needs | efficiency ratio | trials to random's HV @{len(rnd)} |",
                      "|---|---|---|---|---|---|---|---|---|"]
            samplers = sorted(curves[(curves.space == space) & (curves.ladder == ladder)].sampler.unique())
            for s in samplers:
                m = _median_curve(curves, space, ladder, s)
                if trials not in m.index:
                    continue
                at = m.loc[trials]
                need = _first_reaching(rnd, at["median"])
                ratio = f"{need / trials:.2f}" if need else f">{len(rnd) / trials:.1f}"
                reach = _first_reaching(m, r_end)
                name = f"**{s}** (default)" if s == default else s
                lines.append(f"| {name} | {int(at['count'])} | {m.loc[10, 'median']:.4f} | {m.loc[20, 'median']:.4f} "
                             f"| {at['median']:.4f} [{at['min']:.4f}, {at['max']:.4f}] | {_trainings(curves, space, ladder, s, trials)} "
                             f"| {need if need else f'>{len(rnd)}'} | {ratio} | {reach if reach else f'>{len(m)}'} |")
    return "\n".join(lines)


def plot(curves, path: Path, default: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spaces = sorted(curves.space.unique())
    ladders = sorted(curves.ladder.unique())
    fig, axes = plt.subplots(len(spaces), len(ladders), figsize=(5.5 * len(ladders), 3.6 * len(spaces)),
                             squeeze=False)
    for i, space in enumerate(spaces):
        for j, ladder in enumerate(ladders):
            ax = axes[i][j]
            for s in sorted(curves.sampler.unique()):
                m = _median_curve(curves, space, ladder, s)
                if not len(m):
                    continue
                line, = ax.plot(m.index, m["median"], label=s + (" (default)" if s == default else ""),
                                lw=2.2 if s == default else 1.3)
                ax.fill_between(m.index, m["min"], m["max"], color=line.get_color(), alpha=0.12)
            early = curves[(curves.space == space) & (curves.ladder == ladder) & (curves.trial == 10)]
            if len(early):  # the first trials climb from nothing: show where the samplers differ
                ax.set_ylim(bottom=early.groupby("sampler").hv.median().min())
            ax.set_title(f"{space}, ladder {ladder}")
            ax.set_xlabel("trials")
            ax.set_ylabel("hypervolume (median, min-max over seeds)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def report(args) -> None:
    from nas.engine.config import SearchConfig

    df = load_runs(args.out)
    curves = hv_curves(df)
    default = SearchConfig.__dataclass_fields__["sampler"].default
    table = summarize(curves, args.trials, args.random_trials, default)
    live = df[df["live"]]
    head = [f"# Search efficiency ({time.strftime('%Y-%m-%d')}, {platform.machine()}, "
            f"{os.cpu_count()} CPUs, {len(df.groupby(['space', 'ladder', 'sampler', 'seed']))} runs)\n",
            "Made by `benchmarks/search_efficiency.py` (see its docstring for the method). "
            f"{len(df)} trials in all; {df.arch_id.nunique()} distinct architectures were measured live "
            f"({live.eval_seconds.sum() / 60:.0f} CPU-minutes), every other trial read the cache.",
            f"The engine's default sampler is `{default}`.\n"]
    refs = curves.groupby("space")[["ref0", "ref1"]].first()
    head.append("Reference points (minimized: -accuracy, latency_ms): "
                + "; ".join(f"{s}: ({r.ref0:.4f}, {r.ref1:.4f})" for s, r in refs.iterrows()))
    text = "\n".join(head) + "\n" + table + "\n"
    (args.out / "summary.md").write_text(text)
    curves.to_csv(args.out / "curves.csv", index=False)
    plot(curves, args.out / "hv_vs_trials.png", default)
    print(text)
    print(f"wrote {args.out / 'summary.md'}, {args.out / 'hv_vs_trials.png'}, {args.out / 'curves.csv'}")


# ------------------------------------------------------------------------------------ live check
def check_live(args) -> None:
    """A live `nas search` (random sampler, seed 0) against the cached run of the same seed."""
    import tempfile

    import numpy as np
    import pandas as pd

    import nas
    from nas.store.study import load_study

    space, n = args.check_live, args.trials
    job = {"space": space, "ladder": "off", "sampler": "random", "seed": 0, "trials": n}
    cached_dir = args.out / "live-check"
    cached_dir.mkdir(parents=True, exist_ok=True)
    # the cached run (the cache holds, or now measures, every architecture it meets)
    cached = pd.read_csv(run_one(job, args.out, runs=cached_dir))
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/live.db"
        t0 = time.perf_counter()
        nas.search(space, study="live", storage=url, trials=n, sampler="random", seed=0)
        secs = time.perf_counter() - t0
        trials = load_study(url, "live")[0].get_trials()
    from nas.store.trial_attrs import ARCH_ID_KEY, metrics_of

    live_ids = [t.user_attrs[ARCH_ID_KEY] for t in trials]
    same = live_ids == list(cached.arch_id)
    acc = np.array([metrics_of(t)["accuracy"] for t in trials])
    lat = np.array([metrics_of(t)["latency_ms"] for t in trials])
    c_acc, c_lat = cached.v0.to_numpy(float), cached.v1.to_numpy(float)
    rel = np.abs(lat - c_lat) / c_lat
    from scipy import stats

    tau = stats.kendalltau(lat, c_lat).statistic
    lines = [f"# Cached against live, {space}, random sampler seed 0, {n} trials "
             f"({time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs)\n",
             f"- same architectures in the same order: {same}",
             f"- accuracy equal on {int((acc == c_acc).sum())}/{n} (max difference {np.abs(acc - c_acc).max():.4f})",
             f"- latency_ms: median relative difference {np.median(rel):.1%}, max {rel.max():.1%}, "
             f"Kendall tau live vs cached {tau:.3f}, median live / cached {np.median(lat / c_lat):.2f}",
             f"- live search took {secs:.0f}s"]
    from nas.results.volume import hypervolume_of

    directions = _directions(space)
    pts_c, pts_l = _minimized(np.c_[c_acc, c_lat], directions), _minimized(np.c_[acc, lat], directions)
    ref = _reference(pd.DataFrame(np.r_[np.c_[c_acc, c_lat], np.c_[acc, lat]], columns=list(directions)), directions)
    hv_c = [hypervolume_of(pts_c[:k], ref) for k in range(1, n + 1)]
    hv_l = [hypervolume_of(pts_l[:k], ref) for k in range(1, n + 1)]
    gap = max(abs(a - b) / max(a, 1e-12) for a, b in zip(hv_c, hv_l))
    lines.append(f"- hypervolume after {n} trials: cached {hv_c[-1]:.4f}, live {hv_l[-1]:.4f}; largest relative "
                 f"gap along the curve {gap:.1%}")
    text = "\n".join(lines) + "\n"
    (cached_dir / f"{space}.md").write_text(text)
    print(text)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spaces", nargs="+", default=["tiny", "signal", "seq-hybrid"])
    p.add_argument("--samplers", nargs="+", default=["random", "nsga2", "tpe", "gp", "tpe-nogroup"])
    p.add_argument("--ladder", nargs="+", default=["off", "on"], choices=["off", "on"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--random-trials", type=int, default=120)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--summarize", action="store_true", help="only rebuild the table and the PNG")
    p.add_argument("--check-live", metavar="SPACE", help="compare a live search with the cached one")
    args = p.parse_args(argv)
    if args.check_live:
        return check_live(args)
    if not args.summarize:
        run_all(args)
    report(args)


if __name__ == "__main__":
    sys.exit(main())
