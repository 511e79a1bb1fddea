"""The two PyTorch paths of sliding-window attention on CPU: masked SDPA against banded.

    python benchmarks/local_paths.py                 # forward, no gradients
    python benchmarks/local_paths.py --train         # forward + backward
    python benchmarks/local_paths.py --sizes 64,256  # other sequence lengths

One thread, fp32, B1 H4 D32, dilation 1, non-causal. For each size and window it times the masked
path (SDPA with the boolean window mask), the banded path (``kernels.local.local_attention_banded``
and ``neighborhood_attention_banded``), and says which one ``kernels.local_attention`` picks
(``kernels.local.uses_banded``). 1-D rows over N tokens, 2-D rows over a square grid of side
sqrt(N). Milliseconds: median (minimum) of a few runs after one burn-in; on a shared CPU
treat them as rough.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import _repo_path  # noqa: F401  (repository root first on sys.path)
import torch
import torch.nn.functional as F

import kernels  # after the sys.path fix above
from kernels import local


def bench(fn, reps: int) -> tuple[float, float]:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def time_paths(n: int, w: int, grid: tuple[int, int] | None, train: bool, reps: int):
    """((median, min) masked, (median, min) banded, the path the public op picks) in ms."""
    q, k, v = (torch.randn(1, 4, n, 32, requires_grad=train) for _ in range(3))
    if grid is None:
        mask = kernels.local_mask(n, window=w)
        paths = (lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                 lambda: local.local_attention_banded(q, k, v, window=w))
        kernels.local_attention(q, k, v, window=w)
        picks = kernels.last_path("local_attention")
    else:
        mask = local.neighborhood_mask(grid, window=w)
        paths = (lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                 lambda: local.neighborhood_attention_banded(q, k, v, grid, window=w))
        local.neighborhood_attention(q, k, v, grid, window=w)
        picks = kernels.last_path("neighborhood_attention")

    def run(fn):
        if train:
            fn().sum().backward()
        else:
            with torch.no_grad():
                fn()

    return bench(lambda: run(paths[0]), reps), bench(lambda: run(paths[1]), reps), picks


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="16,64,256,1024,4096", help="sequence lengths N (comma-separated)")
    ap.add_argument("--windows", default="3,7,31", help="1-D windows; 2-D rows use those <= 7")
    ap.add_argument("--train", action="store_true", help="time forward + backward")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {platform.machine()}, 1 thread, {'forward+backward' if args.train else 'forward'}"
          f", B1 H4 D32 fp32; ms = median (min)\n")
    print(f"| {'op':4} | {'N':>5} | {'w':>3} | {'masked ms':>17} | {'banded ms':>17} | picks        |")
    print("|------|-------|-----|-------------------|-------------------|--------------|")
    for n in map(int, args.sizes.split(",")):
        for w in map(int, args.windows.split(",")):
            side = math.isqrt(n)
            for grid in (None, (side, side)):
                if grid is not None and (side * side != n or w > 7):
                    continue
                (mm, m0), (bm, b0), picks = time_paths(n, w, grid, args.train, reps=9 if n <= 1024 else 3)
                print(f"| {'1-D' if grid is None else '2-D'}  | {n:5d} | {w:3d} | {mm:8.3f} ({m0:6.3f}) | "
                      f"{bm:8.3f} ({b0:6.3f}) | {picks:12} |", flush=True)


if __name__ == "__main__":
    main()
