"""Start-up time of the `nas` commands, and whether they import torch or timm.

    .venv/bin/python benchmarks/startup.py [--repeats 5] [--tree DIR ...] [--storage URL --study demo]

Each command runs ``--repeats`` times in a fresh interpreter (``python -c "from nas.cli import main;
main()" ARGS``, so it works on any checkout); the table gives the median wall time, its ratio to
``python -c pass`` measured the same way, whether ``torch`` / ``timm`` were imported (one more run
under ``python -X importtime``) and the run's total import time (the sum of the top-level
``cumulative`` column of ``-X importtime``: every import of the run, the lazy ones included).

``--tree DIR`` (repeatable) measures another checkout with the same interpreter (``PYTHONPATH=DIR``,
which comes before the editable install), so a before/after comparison is one run of this script;
the trees take turns in every round, so a change in the machine's load falls on all of them:

    git worktree add /tmp/wt0 <commit>
    .venv/bin/python benchmarks/startup.py --tree /tmp/wt0 --tree .

Without ``--storage`` a demo study is made first (``nas search --space tiny --study demo``, the
default search, 8 trials) in a temporary folder by the first tree. The last row is the default
search's import time (``nas search --space tiny --trials 1`` into a fresh study, median of
``--search-repeats`` runs): every module the search imports, up to its end.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _repo_path  # noqa: F401  (repository root first on sys.path)

ROOT = Path(__file__).resolve().parent.parent
NAS = "import sys; sys.argv[0] = 'nas'; from nas.cli import main; main()"
_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")


def commands(study: str, storage: str, out_dir: str) -> dict[str, list[str]]:
    """Label -> arguments of `nas` (read-only commands on the demo study)."""
    on = ["--study", study, "--storage", storage]
    return {
        "nas --help": ["--help"],
        "nas spaces": ["spaces"],
        "nas studies": ["studies", "--storage", storage],
        "nas status": ["status", *on],
        "nas pareto": ["pareto", *on],
        "nas export": ["export", *on, "--out", os.path.join(out_dir, "demo.csv")],
        "nas show --no-model": ["show", *on, "--trial", "0", "--no-model"],
        "nas show": ["show", *on, "--trial", "0"],
    }


class Failed(Exception):
    """A command exited non-zero (e.g. a command this checkout does not have)."""


def run(tree: Path, args: list[str], cwd: str, *, xopts=(), code: str = NAS) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("NAS_STORAGE", "PYTHONPATH")}
    env["PYTHONPATH"] = str(tree)
    p = subprocess.run([sys.executable, *xopts, "-c", code, *args], cwd=cwd, env=env, capture_output=True,
                       text=True)
    if p.returncode != 0:
        raise Failed(f"{' '.join(args) or code} in {tree} exited {p.returncode}:\n{p.stderr[-2000:]}")
    return p


def timed(tree: Path, args: list[str], cwd: str, code: str = NAS) -> float:
    t0 = time.perf_counter()
    run(tree, args, cwd, code=code)
    return time.perf_counter() - t0


def interleaved(trees: list[Path], fn, repeats: int) -> dict[Path, list]:
    """``fn(tree, i)`` for each tree, ``repeats`` rounds, the trees taking turns in every round, so a
    change in the machine's load falls on all of them alike."""
    out = {tree: [] for tree in trees}
    for i in range(repeats):
        for tree in trees:
            out[tree].append(fn(tree, i))
    return out


def imports(stderr: str) -> tuple[set[str], float]:
    """Top-level packages imported and the total import time in seconds, from -X importtime output."""
    names, total = set(), 0
    for line in stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if m:
            names.add(m.group(4).split(".")[0])
            if len(m.group(3)) == 1:  # a top-level import: its cumulative time includes its children
                total += int(m.group(2))
    return names, total / 1e6


def import_profile(tree: Path, args: list[str], cwd: str) -> tuple[set[str], float]:
    return imports(run(tree, args, cwd, xopts=("-X", "importtime")).stderr)


def make_demo(tree: Path, tmp: str) -> tuple[str, str]:
    storage = f"sqlite:///{tmp}/demo.db"
    print(f"making the demo study (nas search --space tiny --study demo) with {tree} ...", flush=True)
    run(tree, ["search", "--space", "tiny", "--study", "demo", "--storage", storage], tmp)
    return "demo", storage


def search_imports(trees: list[Path], tmp: str, repeats: int) -> dict[Path, tuple[set, float]]:
    """Per tree: what a 1-trial default search imported, and the median of its total import time."""
    def one(tree: Path, i: int):
        storage = f"sqlite:///{tmp}/imports-{trees.index(tree)}-{i}.db"
        return import_profile(tree, ["search", "--space", "tiny", "--study", "s", "--trials", "1",
                                     "--storage", storage], tmp)

    runs = interleaved(trees, one, repeats)
    return {tree: (set().union(*(n for n, _ in r)), statistics.median(t for _, t in r)) for tree, r in runs.items()}


def measure(trees: list[Path], cmds: dict[str, list[str]], tmp: str, repeats: int,
            search_repeats: int) -> dict[Path, list[tuple]]:
    """Rows (label, wall s, ratio to python -c pass, torch?, timm?, import s) per tree."""
    base = {t: statistics.median(r) for t, r in interleaved(trees, lambda t, i: timed(t, [], tmp, "pass"),
                                                          repeats).items()}
    rows = {t: [("python -c pass", base[t], 1.0, "", "", 0.0)] for t in trees}
    for label, args in cmds.items():
        profiles = {}
        for tree in trees:
            try:
                profiles[tree] = import_profile(tree, args, tmp)
            except Failed as e:
                print(f"skipped: {str(e).splitlines()[0]}")
        walls = interleaved(list(profiles), lambda t, i, args=args: timed(t, args, tmp), repeats)
        for tree, (names, total) in profiles.items():
            t = statistics.median(walls[tree])
            rows[tree].append((label, t, t / base[tree], "torch" in names, "timm" in names, total))
    if search_repeats:
        for tree, (names, total) in search_imports(trees, tmp, search_repeats).items():
            rows[tree].append(("nas search (imports)", None, None, "torch" in names, "timm" in names, total))
    return rows


def table(args, trees: list[Path], tmp: str):
    study, storage = (args.study, args.storage) if args.storage else make_demo(trees[0], tmp)
    rows = measure(trees, commands(study, storage, tmp), tmp, args.repeats, args.search_repeats)
    yes_no = {True: "yes", False: "no", "": ""}
    for tree in trees:
        print(f"\n{tree} (median of {args.repeats} runs, the trees taking turns; imports from one -X importtime "
              f"run, the search's the median of {args.search_repeats})")
        print(f"{'command':<22} {'wall s':>7} {'x pass':>7} {'torch':>6} {'timm':>6} {'imports s':>10}")
        for label, t, ratio, torch, timm, total in rows[tree]:
            wall_s, times = ("-", "-") if t is None else (f"{t:.2f}", f"{ratio:.1f}")
            print(f"{label:<22} {wall_s:>7} {times:>7} {yes_no[torch]:>6} {yes_no[timm]:>6} {total:>10.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="runs per command (the median is reported)")
    ap.add_argument("--search-repeats", type=int, default=3, help="1-trial searches per tree (0: skip)")
    ap.add_argument("--tree", action="append", type=Path, help="checkout to measure (default: this one)")
    ap.add_argument("--study", default="demo")
    ap.add_argument("--storage", help="storage of an existing study (default: make the demo study)")
    args = ap.parse_args()
    trees = [t.resolve() for t in (args.tree or [ROOT])]
    print(f"{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            table(args, trees, tmp)
        except Failed as e:
            sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
