"""Which short-training setting ranks like the long reference? Re-score an existing fidelity run.

    python benchmarks/fidelity_schedule.py --space signal --reference results/fidelity-signal/archs.csv \
        --config '{}' --config '{"decay_to": 0.1}' --config '{"lr": 0.01, "decay_to": 0.1}'

`nas fidelity` trains each sampled architecture twice (short proxy, long reference). Trying another
short-training setting does not need the reference again: this script samples the same architectures
(same space, ``--seed`` and ``--n`` as the run that wrote ``--reference``; the arch ids are checked),
trains each with the space's ``train`` settings overridden by each ``--config`` (JSON of TrainConfig
fields), and prints Kendall tau / Spearman rho of the short accuracy and of the short test loss
(sign-corrected) against the run's ``reference_accuracy``, with bootstrap 95% intervals.

Caveat printed with the table: choosing a setting on the same architectures it is scored on is
selection; confirm the choice with ``nas fidelity --seed <other>`` on independently sampled ones.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import _repo_path  # noqa: F401  (repository root first on sys.path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", required=True)
    ap.add_argument("--reference", required=True, type=Path, help="archs.csv written by nas fidelity")
    ap.add_argument("--seed", type=int, default=0, help="the seed of the fidelity run")
    ap.add_argument("--n", type=int, default=20, help="the --n of the fidelity run")
    ap.add_argument("--config", action="append", default=[], help="JSON overrides of the space's train settings")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import numpy as np
    import pandas as pd
    import torch

    import search_spaces
    from evaluators.fidelity import rank_correlation, sample_archs
    from evaluators.tasks import make_task
    from evaluators.train import TrainConfig, train_proxy
    from nas.engine.config import load_space_checked

    torch.set_num_threads(args.threads)
    sp = load_space_checked(args.space)
    ref = pd.read_csv(args.reference).set_index("arch_id")
    archs = sample_archs(sp, args.n, args.seed)
    missing = [a.arch_id for a in archs if a.arch_id not in ref.index]
    if missing:
        sys.exit(f"error: {len(missing)} sampled architectures are not in {args.reference} "
                 f"(another --space, --seed or --n?): {missing[:3]}")
    task = make_task(sp.task.name, sp.task.params, seed=args.seed)
    base = TrainConfig.from_dict(sp.train)
    print(f"space {sp.name}, {len(archs)} architectures (seed {args.seed}), reference: {args.reference}")
    print(f"space train settings: {sp.train}")
    print(f"{'overrides':<40} {'acc tau [95% CI]':>24} {'acc rho':>8} {'loss tau [95% CI]':>24} {'loss rho':>8} {'s':>6}")
    for raw in args.config or ["{}"]:
        over = json.loads(raw)
        cfg = replace(base, **over)
        t0 = time.perf_counter()
        acc, loss, r = [], [], []
        for a in archs:
            if pd.isna(ref.loc[a.arch_id, "reference_accuracy"]):
                continue
            torch.manual_seed(args.seed)
            model = search_spaces.build_model(a, task.io)
            res = train_proxy(model, task, cfg, seed=args.seed)
            acc.append(res.accuracy)
            loss.append(-res.test_loss)
            r.append(ref.loc[a.arch_id, "reference_accuracy"])
        ra = rank_correlation(np.array(acc), np.array(r), bootstrap=args.bootstrap, seed=args.seed)
        rl = rank_correlation(np.array(loss), np.array(r), bootstrap=args.bootstrap, seed=args.seed)
        ci = lambda d: f"{d['tau']:+.2f} [{d['tau_lo']:+.2f}, {d['tau_hi']:+.2f}]"
        print(f"{json.dumps(over):<40} {ci(ra):>24} {ra['rho']:+8.2f} {ci(rl):>24} {rl['rho']:+8.2f}"
              f" {time.perf_counter() - t0:6.0f}", flush=True)
    print("note: settings chosen on these architectures are confirmed only by `nas fidelity --seed <other>`.")
    print("load after:", os.popen("uptime").read().strip())


if __name__ == "__main__":
    main()
