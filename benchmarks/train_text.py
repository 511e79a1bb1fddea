"""From front to model on real text, end to end, as the README walks it.

1. ``nas search --space text-lm``: byte-level language modelling on the Python standard library's
   own sources (offline), scored by validation bits per byte and latency.
2. Pick the front member with the lowest validation bits per byte.
3. ``nas train`` it for ``--steps`` steps; train a same-size softmax-only baseline the same way
   (``nas train --arch``): same widths, depths, FFNs and norms, every mixer replaced by causal
   softmax attention, same seed, steps, data and schedule.
4. Load both with ``nas.load_model``, sample text from them with ``nas.generate``, and print a
   table of test bits per byte (the test split was held out of the search), params and latency.

    nice -n 10 .venv/bin/python benchmarks/train_text.py --trials 8 --steps 2000

Run again with the same ``--workdir`` and it picks up where it stopped (the search and each
training resume). Prints the machine, the commands, the table and the samples. Every process runs
one torch thread unless OMP_NUM_THREADS says otherwise: on a shared 2-core machine two threads per
process thrash (a text-lm step took 1.4 s with two, 60 ms with one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import _repo_path  # noqa: F401  (repository root first on sys.path)

STUDY = "text-demo"
PROMPT = "def "


THREADS = os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported; subprocesses inherit it


def nas_cli(workdir: Path, *args) -> None:
    """Run one `nas` command in ``workdir``, shown as the README shows it."""
    print(f"$ nas {shlex.join(map(str, args))}", flush=True)
    subprocess.run([sys.executable, "-m", "nas.cli.base", *map(str, args)], cwd=workdir, check=True)


def pick_front_member(workdir: Path) -> tuple[int, dict]:
    """(trial number, row) of the front member with the lowest validation bits per byte."""
    import nas

    front = nas.pareto_front(nas.load_trials(f"sqlite:///{workdir}/results/{STUDY}.db", STUDY))
    row = front.sort_values("bits_per_byte").iloc[0]
    return int(row["number"]), row.to_dict()


def softmax_twin(arch_path: Path, out_path: Path) -> bool:
    """Write the same-size softmax-only architecture of ``arch_path``: every mixer becomes softmax
    attention with the mixer's head count (its default where the arch leaves it out; softmax's own
    for a mixer without heads). False if the architecture is softmax-only already."""
    from search_spaces import ArchSpec, get_mixer_info

    def heads_of(mixer: dict) -> int:
        info = get_mixer_info(mixer["type"])
        own = info.params["heads"].default if "heads" in info.params else get_mixer_info("softmax").params["heads"].default
        return mixer["params"].get("heads", own)

    d = json.loads(arch_path.read_text())
    twin = json.loads(json.dumps(d))
    for stage in twin["stages"]:
        for block in stage["blocks"]:
            heads = heads_of(block["mixer"])
            block["mixer"] = {"type": "softmax", "params": {"heads": heads if stage["dim"] % heads == 0 else 1}}
    ArchSpec.from_dict(twin).validate()
    out_path.write_text(json.dumps(twin, indent=2))
    return twin != d


def _row(name: str, folder: Path) -> dict:
    m = json.loads((folder / "metrics.json").read_text())
    arch = json.loads((folder / "train.json").read_text())["summary"]
    return {"model": name, "architecture": arch, "params": m["params"], "test bits/byte": m["bits_per_byte"],
            "val bits/byte": m["val_bits_per_byte"], "test accuracy": m["accuracy"],
            "latency ms": m["latency_ms"], "train s": m["train_seconds"]}


def print_table(rows: list[dict]) -> None:
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join(" --- " for _ in cols) + "|")
    for r in rows:
        cells = [f"{v:,}" if isinstance(v, int) else f"{v:.3f}" if isinstance(v, float) else str(v).replace("|", "\\|")
                 for v in r.values()]
        print("| " + " | ".join(cells) + " |")


def show_samples(folders: dict, n: int) -> None:
    import nas

    for name, folder in folders.items():
        model = nas.load_model(folder)
        text = nas.generate(model, PROMPT, n, temperature=0.8, seed=0)
        print(f"\n--- {name}: nas.generate(model, {PROMPT!r}, {n}, temperature=0.8, seed=0)")
        print(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=8, help="search trials (text-lm's own budget is 30)")
    ap.add_argument("--steps", type=int, default=2000, help="full-training steps (the proxy trains 200)")
    ap.add_argument("--workdir", type=Path, default=Path("results/train-text"))
    ap.add_argument("--sample-bytes", type=int, default=240)
    a = ap.parse_args()
    work = a.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s) per process (OMP_NUM_THREADS={THREADS}); python {platform.python_version()} (its stdlib is the corpus)")
    t0 = time.perf_counter()
    nas_cli(work, "search", "--space", "text-lm", "--study", STUDY, "--trials", a.trials)
    trial, row = pick_front_member(work)
    print(f"front member with the lowest validation bits/byte: trial {trial} ({row['bits_per_byte']:.3f}): {row['summary']}")
    chosen = work / "runs" / f"trial-{trial}"
    nas_cli(work, "train", "--study", STUDY, "--trial", trial, "--steps", a.steps, "--out", chosen.relative_to(work))
    twin_arch, baseline = work / "softmax-arch.json", work / "runs" / f"softmax-of-{trial}"
    if not softmax_twin(chosen / "arch.json", twin_arch):
        print("the chosen member is softmax-only already: it is its own baseline")
    nas_cli(work, "train", "--arch", twin_arch.name, "--space", "text-lm", "--steps", a.steps,
            "--out", baseline.relative_to(work))
    print(f"\ntest split of text-lm, {a.steps} training steps each ({(time.perf_counter() - t0) / 60:.1f} min in all)\n")
    print_table([_row(f"front trial {trial}", chosen), _row("softmax-only, same size", baseline)])
    show_samples({f"front trial {trial}": chosen, "softmax-only": baseline}, a.sample_bytes)


if __name__ == "__main__":
    main()
