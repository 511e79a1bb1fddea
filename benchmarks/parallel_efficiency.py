"""Parallel efficiency: hypervolume against wall-clock time, local backend vs Ray with 2 workers.

    nice .venv/bin/python benchmarks/parallel_efficiency.py [--space signal] [--trials 24] [--seeds 2]
        [--out benchmarks/search-efficiency]

Each configuration is a real search (``nas.search``, the engine's default sampler, the same seed for
both backends) into a fresh SQLite study; the clock starts before the call, so Ray's start-up is
in the Ray curve, as a user waits for it. The hypervolume after each finished trial (one reference
point over every run, as ``nas.results.volume.reference_point`` makes one) is read against the time
that trial ended. Prints the median hypervolume of each backend at fixed times and the time each
needs to reach the other's final hypervolume; writes ``parallel.md`` and ``parallel.png``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import _repo_path  # noqa: F401  (repository root first on sys.path)

OUT = Path(__file__).resolve().parent / "search-efficiency"
CONFIGS = (("local", 1), ("ray", 2))


def run_search(space: str, backend: str, workers: int, trials: int, seed: int, tmp: str) -> list[dict]:
    """One search; per finished trial, when it ended (s after the call) and its objective values."""
    import nas
    from nas.store.study import load_study

    url = f"sqlite:///{tmp}/{backend}{workers}s{seed}.db"
    name = f"{backend}{workers}s{seed}"
    t0 = datetime.now(timezone.utc)
    start = time.perf_counter()
    nas.search(space, study=name, storage=url, trials=trials, backend=backend, workers=workers, seed=seed,
               options={"asha": False} if backend == "ray" else None)
    wall = time.perf_counter() - start
    study, _ = load_study(url, name)
    rows = []
    for t in study.get_trials():
        if t.state.name != "COMPLETE":
            continue
        ended = t.datetime_complete.replace(tzinfo=timezone.utc) if t.datetime_complete.tzinfo is None \
            else t.datetime_complete
        rows.append({"backend": f"{backend} x{workers}", "seed": seed, "t": (ended - t0).total_seconds(),
                     "v": list(t.values), "wall": wall})
    return rows


def curves(rows: list[dict], directions: list[str]):
    """Hypervolume after each finished trial, per run (reference point over all runs)."""
    import numpy as np
    import pandas as pd

    from nas.results.volume import hypervolume_of, reference_point

    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    cols = [f"v{i}" for i in range(len(directions))]
    point = reference_point(pd.DataFrame([r["v"] for r in rows], columns=cols), dict(zip(cols, directions)))
    ref = np.array([point[c] for c in cols]) * signs  # the engine's default rule, over every run
    out = []
    df = pd.DataFrame(rows)
    for (backend, seed), run in df.groupby(["backend", "seed"]):
        run = run.sort_values("t")
        p = np.array(run["v"].tolist(), float) * signs
        for k in range(1, len(run) + 1):
            out.append({"backend": backend, "seed": seed, "t": run["t"].iloc[k - 1],
                        "hv": hypervolume_of(p[:k], ref), "wall": run["wall"].iloc[0]})
    return pd.DataFrame(out), ref


def hv_at(c, backend: str, t: float) -> list[float]:
    """Per seed, the hypervolume reached by time ``t`` (0 before the first trial ends)."""
    out = []
    for _, run in c[c.backend == backend].groupby("seed"):
        done = run[run.t <= t]
        out.append(float(done.hv.max()) if len(done) else 0.0)
    return out


def main(argv=None) -> None:
    import numpy as np

    import evaluators

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="signal")
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    directions = list(evaluators.load_space(args.space).objectives.values())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            # alternate the order: the machine's speed drifts
            for backend, workers in CONFIGS if seed % 2 == 0 else CONFIGS[::-1]:
                got = run_search(args.space, backend, workers, args.trials, seed, tmp)
                print(f"{backend} x{workers} seed {seed}: {len(got)} trials in {got[0]['wall']:.0f}s", flush=True)
                rows += got
    c, ref = curves(rows, directions)
    names = [f"{b} x{w}" for b, w in CONFIGS]
    end = max(c.t)
    marks = [round(end * f) for f in (0.25, 0.5, 0.75, 1.0)]
    lines = [f"# Parallel efficiency: {args.space}, {args.trials} trials, {args.seeds} seeds "
             f"({time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, {os.cpu_count()} CPUs, "
             f"load {os.getloadavg()[0]:.1f})\n",
             "`benchmarks/parallel_efficiency.py`: hypervolume (median over seeds) reached by each time, "
             f"reference point {tuple(round(float(x), 4) for x in ref)} (minimized objectives).\n",
             "| backend | wall s (median) | " + " | ".join(f"HV by {m}s" for m in marks) + " |",
             "|---|---|" + "---|" * len(marks)]
    for n in names:
        walls = c[c.backend == n].groupby("seed").wall.first()
        lines.append(f"| {n} | {np.median(walls):.0f} | "
                     + " | ".join(f"{np.median(hv_at(c, n, m)):.4f}" for m in marks) + " |")
    for a, b in (names, names[::-1]):
        target = np.median(hv_at(c, b, end))
        times = sorted(set(c.t))
        hit = next((t for t in times if np.median(hv_at(c, a, t)) >= target - 1e-12), None)
        lines.append(f"\n{a} reaches {b}'s final median hypervolume ({target:.4f}) "
                     + (f"after {hit:.0f}s." if hit is not None else "not within its run."))
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "parallel.md").write_text(text)
    _plot(c, names, args.out / "parallel.png", args.space)
    print(text)


def _plot(c, names, path: Path, space: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for n, color in zip(names, ("tab:blue", "tab:orange")):
        for i, (_, run) in enumerate(c[c.backend == n].groupby("seed")):
            ax.step(run.t, run.hv, where="post", color=color, alpha=0.8, label=n if i == 0 else None)
    ax.set_xlabel("wall-clock seconds since the search started")
    ax.set_ylabel("hypervolume")
    ax.set_title(f"{space}: local vs Ray x2 (one line per seed)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
