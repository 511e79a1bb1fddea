"""How close the memory check's estimate is to what a process really takes: estimate vs RSS growth.

    .venv/bin/python benchmarks/memory_estimate.py

For a few models (a 4-block stack of one mixer at width 64 with a GLU FFN, scaled and lengthened
as a deployment profile would be), each case in a fresh process with one torch thread: the
estimate ``evaluators.model_memory`` makes before anything is allocated (``profile_need`` for an
inference forward, ``training_need`` for a training step with AdamW), then the growth of the
process's peak resident memory (``ru_maxrss``) over its resident memory just before the model is
built, while the model is built and run. The ratio RSS / estimate is what ``PLANNED`` (the
fraction of the available memory one model may be planned to use) has to cover.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import _repo_path  # noqa: F401  (repository root first; benchmarks/kernel_speed.py off the path)

CASES = [  # mixer, profile seq_len, scale.dim, batch, mode
    ("softmax", 8192, 4, 1, "inference"),
    ("softmax", 32768, 8, 1, "inference"),
    ("linear", 8192, 4, 1, "inference"),
    ("hyena", 32768, 4, 2, "inference"),
    ("softmax", 2048, 2, 4, "training"),
    ("linear", 2048, 2, 32, "training"),
    ("hyena", 2048, 1, 32, "training"),
]


def one(mixer: str, n: int, k: int, batch: int, mode: str) -> dict:
    """Estimate, then build and run, in this process; the numbers in MiB."""
    import resource

    import torch

    from evaluators import model_memory
    from evaluators.cost import example_input
    from search_spaces import ArchSpec, BlockSpec, FFNSpec, MixerSpec, StageSpec, StemSpec, TaskIO, build_model
    from search_spaces.deploy_profiles import Profile, Scale, scale_arch

    torch.set_num_threads(1)
    io = TaskIO(kind="tokens", num_classes=64, seq_len=32, vocab_size=64, causal=True, per_token=True)
    block = BlockSpec(MixerSpec(mixer, {"heads": 4} if mixer in ("softmax", "linear") else {}), FFNSpec("glu", 2))
    arch = ArchSpec(stem=StemSpec(), causal=True, stages=(StageSpec(dim=64, blocks=(block,) * 4),))
    profile = Profile("p", seq_len=n, batch_size=batch, scale=Scale(dim=k))
    arch_p, io_p = scale_arch(arch, profile), profile.task_io(io)
    if mode == "inference":
        need = model_memory.profile_need(arch, io, profile)
    else:
        need = model_memory.training_need(arch_p, io_p, batch)
    page = os.sysconf("SC_PAGE_SIZE")
    before = int(open("/proc/self/statm").read().split()[1]) * page
    model, x = build_model(arch_p, io_p), example_input(io_p, batch)
    if mode == "inference":
        with torch.inference_mode():
            model.eval()(x)
    else:
        opt = torch.optim.AdamW(model.parameters())
        y = model(x)
        torch.nn.functional.cross_entropy(y.flatten(0, 1), torch.zeros(y.shape[0] * y.shape[1], dtype=torch.long)).backward()
        opt.step()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {"estimate": need.bytes / 2**20, "rss": grown / 2**20}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        print(json.dumps(one(sys.argv[2], *map(int, sys.argv[3:6]), sys.argv[6])))
        return
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{'case':<40} {'estimate MiB':>13} {'RSS growth MiB':>15} {'RSS/estimate':>13}")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for case in CASES:
        out = subprocess.run([sys.executable, __file__, "--one", *map(str, case)], env=env, capture_output=True,
                             text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        mixer, n, k, batch, mode = case
        name = f"{mode} {mixer} N={n} dim x{k} batch {batch}"
        print(f"{name:<40} {r['estimate']:>13.0f} {r['rss']:>15.0f} {r['rss'] / r['estimate']:>13.2f}")


if __name__ == "__main__":
    main()
