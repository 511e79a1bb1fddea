"""Prefill versus per-token decode latency of causal reference designs (and sampled hybrids).

    .venv/bin/python benchmarks/decode_latency.py [--seq-len 512] [--dim 64] [--depth 4]
        [--batch 1] [--threads 1] [--max-seconds 1.0] [--device cpu|cuda] [--space seq-hybrid --n 3]

Builds fixed designs of one family each (softmax, GQA, linear attention, sliding window, Hyena)
and a Hyena/attention hybrid, all at the same width, depth and MLP, for a causal token task of
``--seq-len`` tokens; with ``--space``, also ``--n`` architectures sampled from that space (at its
own task). For each: ``latency_ms`` (the parallel forward over seq_len tokens, i.e. prefill,
``evaluators.latency``), ``decode_ms`` (one more token at the end of a seq_len-token sequence,
``evaluators.decode``), their ratio prefill / decode, and ``state_mb`` (per-sequence decoding state
from the mixers' decode_state). Timings are medians over rounds until the spread is under 5% or
``--max-seconds`` is spent, per design and metric.
"""

from __future__ import annotations

import argparse
import os
import platform

import _repo_path  # noqa: F401  (repository root first on sys.path)


def reference_designs(dim: int, depth: int) -> dict:
    from search_spaces import (
        ArchSpec,
        BlockSpec,
        FFNSpec,
        MixerSpec,
        StageSpec,
        StemSpec,
    )

    heads = max(1, dim // 32)

    def stack(*mixers):
        blocks = tuple(BlockSpec(MixerSpec(t, p), FFNSpec("mlp", 2)) for t, p in mixers)
        return ArchSpec(StemSpec("embed"), (StageSpec(dim, blocks),), causal=True)

    return {
        "softmax": stack(*[("softmax", {"heads": heads})] * depth),
        "gqa (kv_heads 1)": stack(*[("gqa", {"heads": heads, "kv_heads": 1})] * depth),
        "linear": stack(*[("linear", {"heads": heads})] * depth),
        "local (window 7)": stack(*[("local", {"heads": heads, "window": 7})] * depth),
        "hyena": stack(*[("hyena", {})] * depth),
        "hybrid hyena then softmax": stack(*[("hyena", {})] * (depth - depth // 2),
                                           *[("softmax", {"heads": heads})] * (depth // 2)),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-seconds", type=float, default=1.0)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--space", default=None, help="also time architectures sampled from this space")
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    from evaluators.cost import decode_state_mb
    from evaluators.decode import measure_decode
    from evaluators.latency import LatencyConfig, measure_latency
    from search_spaces import TaskIO, build_model

    io = TaskIO(kind="tokens", num_classes=args.vocab, seq_len=args.seq_len, vocab_size=args.vocab,
                causal=True, per_token=True)
    designs = [(name, arch, io) for name, arch in reference_designs(args.dim, args.depth).items()]
    if args.space:
        import optuna

        import search_spaces
        from nas.engine.config import load_space_checked

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        space = load_space_checked(args.space)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed))
        for i in range(args.n):
            arch = search_spaces.sample(space, study.ask())
            mixers = "+".join(b.mixer.type for s in arch.stages for b in s.blocks)
            designs.append((f"{args.space} #{i}: {mixers}", arch, space.io))

    cfg = LatencyConfig(batch_size=args.batch, threads=args.threads, warmup=3, repeats=15,
                        max_seconds=args.max_seconds, device=args.device)
    device = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or platform.machine()
    print(f"machine: {device}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; torch "
          f"{torch.__version__}; {args.threads} thread(s), batch {args.batch}; reference designs: width "
          f"{args.dim}, depth {args.depth}, MLP x2, seq_len {args.seq_len}")
    print()
    print("| design | seq_len | prefill latency_ms | decode_ms / token | prefill / decode | state_mb |")
    print("|---|---|---|---|---|---|")
    for name, arch, task_io in designs:
        torch.manual_seed(0)
        model = build_model(arch, task_io)
        pre = measure_latency(model, task_io, cfg)
        dec = measure_decode(model, task_io, cfg)
        state = decode_state_mb(model, task_io.seq_len)
        print(f"| {name} | {task_io.seq_len} | {pre['latency_ms']:.3f} (±{100 * pre['latency_spread']:.0f}%) "
              f"| {dec['decode_ms']:.3f} (±{100 * dec['decode_spread']:.0f}%) "
              f"| {pre['latency_ms'] / dec['decode_ms']:.1f} | {state:.3f} |", flush=True)


if __name__ == "__main__":
    main()
