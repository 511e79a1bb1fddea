"""Does a 2-worker Ray search measure the same latencies as an idle machine?

    python benchmarks/ray_latency.py [--archs 8] [--modes rw mutex none]

1. Sample ``--archs`` distinct architectures of the `tiny` space (seeded) and time each one alone,
   in this process, with the space's latency settings ("idle").
2. For each lock mode, run a Ray search with 2 workers whose trials are exactly those architectures
   (enqueued), early stopping off, and read the latency each trial recorded:
   ``rw`` (training pauses while another trial is timed), ``mutex`` (timings serialized,
   training goes on), ``none`` (no lock).
3. Report per mode: Spearman rank correlation and median relative error against idle, and the
   median recorded spread (MAD / median).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
from pathlib import Path

import _repo_path  # noqa: E402, F401  (repository root first on sys.path)


def _load() -> str:
    return os.popen("uptime").read().strip()


def _spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def sample_archs(space, n: int, seed: int = 0):
    import optuna

    import search_spaces

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    archs = {}
    for _ in range(200 * n):
        arch = search_spaces.sample(space, study.ask())
        archs.setdefault(arch.arch_id, arch)
        if len(archs) == n:
            break
    return list(archs.values())


def idle_latency(archs, space, settings) -> dict[str, dict]:
    import torch

    from evaluators.latency import measure_latency
    from search_spaces import build_model

    out = {}
    for arch in archs:
        torch.manual_seed(0)
        model = build_model(arch, space.io)
        out[arch.arch_id] = measure_latency(model, space.io, settings.latency)
    return out


def search_latency(archs, space_name: str, text: str, mode: str, tmp: Path) -> dict[str, dict]:
    import ray

    from nas.engine.backends.ray import run
    from nas.engine.config import SearchConfig
    from nas.store.study import create_or_load_study
    from nas.store.trial_attrs import ARCH_ID_KEY, FIXED_ARCH_KEY, metrics_of

    config = SearchConfig(space=space_name, space_yaml=text, study=f"lat-{mode}", storage=f"sqlite:///{tmp}/{mode}.db",
                          trials=len(archs), sampler="random", seed=0, backend="ray", workers=2,
                          extra={"cpus_per_trial": 1, "asha": False, "latency_lock": mode})
    study, config, _ = create_or_load_study(config)
    for arch in archs:
        study.enqueue_trial({}, user_attrs={FIXED_ARCH_KEY: arch.to_json()})
    ray.init(num_cpus=2, object_store_memory=100 * 1024 * 1024, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    try:
        run(study, config, log=lambda m: None)
    finally:
        ray.shutdown()
    return {t.user_attrs[ARCH_ID_KEY]: metrics_of(t) for t in study.get_trials() if t.state.name == "COMPLETE"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="tiny")
    ap.add_argument("--archs", type=int, default=8)
    ap.add_argument("--modes", nargs="+", default=["rw", "mutex", "none"])
    ap.add_argument("--steps", type=int, default=None, help="override the space's train steps (shorter runs)")
    args = ap.parse_args()

    import yaml

    from nas.engine.config import load_checked
    from search_spaces.space import resolve_space

    text = resolve_space(args.space).read_text()
    if args.steps:
        raw = yaml.safe_load(text)
        raw.setdefault("train", {})["steps"] = args.steps
        text = yaml.safe_dump(raw)
    checked = load_checked(args.space, text=text)  # read once: the space and its settings
    space, settings = checked.space, checked.settings
    archs = sample_archs(space, args.archs)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; load: {_load()}")
    print(f"{len(archs)} architectures of {args.space!r}; latency settings {settings.latency}")
    idle = idle_latency(archs, space, settings)
    print(f"idle measured; load: {_load()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ["idle again", *args.modes]:  # a second idle pass: the noise floor
            if mode == "idle again":
                got = idle_latency(archs, space, settings)
            else:
                got = search_latency(archs, args.space, text, mode, Path(tmp))
            ids = [a.arch_id for a in archs if a.arch_id in got]
            ref = [idle[i]["latency_ms"] for i in ids]
            lat = [got[i]["latency_ms"] for i in ids]
            rel = [abs(x - r) / r for x, r in zip(lat, ref)]
            print(f"  {mode}: search/idle ratios " + ", ".join(f"{x / r:.2f}" for x, r in zip(lat, ref)))
            rows.append((mode, len(ids), _spearman(ref, lat), statistics.median(rel), max(rel),
                         statistics.median(got[i]["latency_spread"] for i in ids),
                         sum(not got[i]["latency_converged"] for i in ids)))
            print(f"  mode {mode} done; load: {_load()}", flush=True)
    print(f"\nidle: median spread {statistics.median(v['latency_spread'] for v in idle.values()):.3f}; "
          f"latencies ms " + ", ".join(f"{idle[a.arch_id]['latency_ms']:.3f}" for a in archs))
    hdr = f"{'lock mode':<10}{'archs':>6}{'spearman':>10}{'median rel err':>16}{'max rel err':>13}{'median spread':>15}{'not converged':>15}"
    print(hdr)
    print("-" * len(hdr))
    for mode, n, rho, med, mx, spread, nc in rows:
        print(f"{mode:<10}{n:>6}{rho:>10.3f}{med:>16.3f}{mx:>13.3f}{spread:>15.3f}{nc:>15}")
    print(f"load after: {_load()}")


if __name__ == "__main__":
    main()
