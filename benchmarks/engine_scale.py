"""The engine's own cost per trial against the study's size, with the null evaluation.

    python benchmarks/engine_scale.py [--sizes 100 1000 10000] [--trials 30] [--processes 1 2 4]

For each size N: a study of N trials is made by running 100 trials of ``benchmarks/null.yaml``
(the null task: no model, no training, no timing; ``benchmarks/null_task.py``) and copying them in
the database (bulk INSERT ... SELECT of Optuna's rows, doubling; not by running N trials), then

- ``nas resume`` runs ``--trials`` more trials with 1, 2, ... processes on the study (sampler
  random): the engine overhead per trial is the wall time of those trials (measured from the
  trials' own start and end times, so process start-up is left out) divided by their number;
- bare Optuna ``ask``/``tell`` with the same sampler on a copy of the same study, the same number
  of trials, in the same run;
- ``nas pareto``, ``nas status``, ``nas export`` (whole commands, start-up included) and
  ``nas.load_trials`` (in this process) on the study.

SQLite only (a PostgreSQL server was not run for the committed output). Prints the tables and
writes them with the raw timings to ``benchmarks/engine-scale/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _repo_path  # noqa: F401  (repository root first on sys.path)

HERE = Path(__file__).resolve().parent
SPACE = HERE / "null.yaml"
OUT = HERE / "engine-scale"
CHILD = {"trial_params": "param_name, param_value, distribution_json", "trial_values": "objective, value, value_type",
         "trial_user_attributes": "key, value_json", "trial_system_attributes": "key, value_json",
         "trial_intermediate_values": "step, intermediate_value, intermediate_value_type"}


def nas(*args, cwd) -> float:
    """Run ``python -m nas ARGS``; its wall time in seconds (it must succeed)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-W", "ignore", "-m", "nas", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def grow(db: Path, n: int) -> None:
    """Copy the study's trials in ``db`` (one study, trial ids 1..k) until it holds ``n``."""
    import sqlalchemy as sa

    from nas.store.optuna_access import engine

    with engine(open_study(db)).begin() as c:
        count, lo, hi = c.execute(sa.text("select count(*), min(trial_id), max(trial_id) from trials")).one()
        assert lo == 1 and hi == count, "one study with contiguous trial ids"
        while count < n:
            add = min(count, n - count)
            c.execute(sa.text(f"insert into trials (trial_id, number, study_id, state, datetime_start, datetime_complete) "
                              f"select trial_id + {count}, number + {count}, study_id, state, datetime_start, "
                              f"datetime_complete from trials where trial_id <= {add}"))
            for table, cols in CHILD.items():
                c.execute(sa.text(f"insert into {table} (trial_id, {cols}) select trial_id + {count}, {cols} "
                                  f"from {table} where trial_id <= {add}"))
            count += add


def open_study(db: Path):
    """The study ``s`` in ``db``, opened through the one door to storage."""
    from nas.store.storage import find_study, open_storage

    url = f"sqlite:///{db}"
    return find_study(open_storage(url, create=False), "s", url)


def trial_span(db: Path, first: int) -> float:
    """Seconds from the start of trial ``first`` to the end of the last trial (the trials run)."""
    st = open_study(db)
    run = [t for t in st.get_trials(deepcopy=False) if t.number >= first and t.datetime_complete]
    return (max(t.datetime_complete for t in run) - min(t.datetime_start for t in run)).total_seconds()


def engine_run(db: Path, n: int, extra: int, processes: int, cwd: Path) -> float:
    """Per-trial seconds of ``extra`` more trials run by ``processes`` `nas resume` processes."""
    args = [sys.executable, "-W", "ignore", "-m", "nas", "resume", "--storage", f"sqlite:///{db}", "--study", "s",
            "--trials", str(n + extra)]
    procs = [subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(processes)]
    for p in procs:
        assert p.wait() == 0, p.stderr.read().decode()[-2000:]
    return trial_span(db, n) / extra


def bare_optuna(db: Path, extra: int) -> float:
    """Per-trial seconds of ``extra`` ask/tell pairs with Optuna alone (random sampler, the space's
    parameters suggested as a search suggests them: the same distributions as the stored trials)."""
    import optuna

    st = open_study(db)
    st.sampler = optuna.samplers.RandomSampler(seed=1)
    dists = st.trials[0].distributions
    t0 = time.perf_counter()
    for _ in range(extra):
        trial = st.ask(dists)
        st.tell(trial, [0.5, 0.5])
    return (time.perf_counter() - t0) / extra


def load_seconds(db: Path) -> float:
    import nas

    t0 = time.perf_counter()
    nas.load_trials(f"sqlite:///{db}", "s")
    return time.perf_counter() - t0


def run_size(seed_db: Path, n: int, extra: int, processes: list[int], work: Path) -> dict:
    row = {"size": n}
    db = work / f"s{n}.db"
    shutil.copy(seed_db, db)
    grow(db, n)
    url = f"sqlite:///{db}"
    row["pareto_s"] = nas("pareto", "--storage", url, "--study", "s", cwd=work)
    row["status_s"] = nas("status", "--storage", url, "--study", "s", cwd=work)
    row["export_s"] = nas("export", "--storage", url, "--study", "s", "--out", str(work / f"e{n}.csv"), cwd=work)
    row["load_trials_s"] = load_seconds(db)
    bare = work / f"b{n}.db"
    shutil.copy(db, bare)
    row["optuna_per_trial_s"] = bare_optuna(bare, extra)
    for k in processes:
        run = work / f"p{k}-{n}.db"
        shutil.copy(db, run)
        row[f"engine_{k}p_per_trial_s"] = engine_run(run, n, extra, k, work)
    return row


def table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |"
              for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--trials", type=int, default=30, help="trials run at each size and process count")
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args()
    env_note = f"{platform.node()}: {os.cpu_count()} CPUs, {platform.python_version()}, load {os.getloadavg()}"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seed = work / "seed.db"
        nas("search", "--space", str(SPACE), "--storage", f"sqlite:///{seed}", "--study", "s", "--trials", "100",
            "--sampler", "random", cwd=work)
        rows = [run_size(seed, n, args.trials, args.processes, work) for n in args.sizes]
    text = f"engine_scale.py --sizes {args.sizes} --trials {args.trials} --processes {args.processes}\n{env_note}\n\n"
    text += table(rows) + "\n"
    print(text)
    OUT.mkdir(exist_ok=True)
    (OUT / "sqlite.md").write_text(text)
    (OUT / "sqlite.json").write_text(json.dumps({"machine": env_note, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
