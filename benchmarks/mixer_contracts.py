"""What the mixer contract check costs: loading every built-in space, with and without it.

    .venv/bin/python benchmarks/mixer_contracts.py [--repeats 5]

Each run is a fresh interpreter that imports what a search imports before it loads its space
(torch, ``evaluators.evaluation``), then times ``evaluators.load_space`` of every built-in space
(``search_spaces.list_spaces()``): with the check (``search_spaces.contracts.check_space_mixers``,
which probes each mixer configuration the spaces use, importing the mixers' modules) and without
it (the function replaced by a no-op). The two kinds of run take turns, so a change in the
machine's load falls on both; the table gives the median of each and their difference.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import _repo_path  # noqa: F401  (repository root first)

from search_spaces import list_spaces  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

CODE = """
import sys, time
import torch, evaluators, search_spaces, evaluators.evaluation
import search_spaces.contracts as contracts
configs, check = set(), contracts.check_mixer
def counted(name, params=None, **how):
    configs.add((name, tuple(sorted((params or {}).items())), *sorted(how.items())))
    check(name, params, **how)
contracts.check_mixer = counted
if sys.argv[1] == "off":
    contracts.check_space_mixers = lambda space: None
t = time.perf_counter()
for name in search_spaces.list_spaces():
    evaluators.load_space(name)
print(time.perf_counter() - t, len(configs))
"""


def _run(mode: str) -> tuple[float, int]:
    out = subprocess.run([sys.executable, "-c", CODE, mode], capture_output=True, text=True, check=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout.split()
    return float(out[0]), int(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times = {"on": [], "off": []}
    configs = 0
    for _ in range(args.repeats):
        for mode in times:
            seconds, n = _run(mode)
            times[mode].append(seconds)
            configs = max(configs, n)
    on, off = (statistics.median(times[m]) for m in ("on", "off"))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; {args.repeats} runs each")
    print(f"built-in spaces: {len(list_spaces())}, mixer configurations checked: {configs}")
    print(f"load all, with the check:    {on:.3f} s (median)")
    print(f"load all, without the check: {off:.3f} s (median)")
    print(f"the check costs:             {on - off:.3f} s")


if __name__ == "__main__":
    main()
