"""Why the latency predictor times parts in place: a part timed alone against the same part inside its model.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/part_context.py [--space seq-hybrid] [--n 8] [--seed 0]

For N sampled architectures at the task's shape, one torch thread: the sum of the parts timed
alone (each part called in a loop of its own, ``time_calls`` with the space's ``latency:``
rules), the sum of the parts timed in place (``evaluators.block_parts.time_parts``: the parts run
in forward order, a clock read between them) and the whole model (``latency_ms`` as a search
times it); prints each sum over the whole model.
"""

from __future__ import annotations

import argparse
import os
import platform

import _repo_path  # noqa: F401  (repository root first on sys.path)


def alone_sum(arch, io, profile, latency, seed: int) -> float:
    """Sum over the model's parts of each part timed in a loop of its own (the old way)."""
    import torch

    from evaluators.block_parts import part_calls
    from evaluators.latency import on_device, time_calls
    from search_spaces.deploy_profiles import profile_model

    torch.manual_seed(seed)
    model, x = on_device(profile_model(arch, io, profile), profile.task_io(io), latency)
    with torch.inference_mode():
        calls, _ = part_calls(model, x)
        total = 0.0
        for call in calls:
            total += time_calls([call], latency).summary()["latency_ms"]
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="seq-hybrid")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    from evaluators.block_parts import model_parts, time_parts
    from evaluators.fidelity import sample_archs
    from evaluators.latency import LatencyConfig
    from evaluators.profile_costs import ProfileRequest, measure_profile, task_profile
    from nas.engine.config import load_space_checked

    space = load_space_checked(args.space)
    latency = LatencyConfig.from_dict(space.latency)
    profile = task_profile(space.io, latency)
    torch.set_num_threads(latency.threads)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}; space "
          f"{args.space} at the task's shape, {args.n} architectures, latency {space.latency}\n")
    print("| arch | parts | alone sum ms | in place sum ms | whole ms | alone / whole | in place / whole |")
    print("|---|---|---|---|---|---|---|")
    for arch in sample_archs(space, args.n, args.seed):
        parts = model_parts(arch, space.io, profile)
        alone = alone_sum(arch, space.io, profile, latency, args.seed)
        timed = time_parts(arch, space.io, profile, latency, seed=args.seed)
        in_place = sum(timed[p.key].median_ms for p in parts)
        whole = measure_profile(arch, space.io, ProfileRequest(profile, ("latency_ms",)), latency,
                                seed=args.seed)["latency_ms"]
        print(f"| {arch.arch_id} | {len(parts)} | {alone:.4f} | {in_place:.4f} | {whole:.4f} | {alone / whole:.3f} | "
              f"{in_place / whole:.3f} |", flush=True)


if __name__ == "__main__":
    main()
