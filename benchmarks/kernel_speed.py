"""Speed of the kernel ops: Triton kernels against the best PyTorch path, per op and shape.

    python benchmarks/kernel_speed.py            # GPU: real sizes; CPU: PyTorch paths at small sizes
    python benchmarks/kernel_speed.py --quick    # fewer shapes

On a CUDA device each row gives the Triton kernel's time, the best PyTorch path's time (for
attention the fastest SDPA backend that accepts the input), their ratio (>1: the kernel is
faster), the kernel's TFLOP/s, its share of the device's dense fp16/bf16 peak, and the path the
public op takes by default there (PyTorch until the kernel is listed in
``kernels.dispatch.VERIFIED_TRITON``: this table is half of what puts it there, the GPU tests the
other half). Without CUDA the
Triton kernels cannot run (the interpreter is for tests, not timing), so it times the PyTorch
reference against the path the public op takes, at small sizes, and says so (for local attention:
against both PyTorch paths, banded and masked SDPA, the public op's marked *).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from functools import partial

import _repo_path  # noqa: F401  (repository root first on sys.path)
import torch
import torch.nn.functional as F

import kernels
from kernels.local import local_attention_banded

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense fp16/bf16 tensor-core peaks


def peak_for(name: str) -> float | None:
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def bench(fn, *, cuda: bool, reps: int = 20, warmup: int = 3) -> float:
    """Milliseconds per call after burn-in: the median of CUDA-event timings on a GPU; on CPU the
    minimum (shared CPUs throttle in bursts, and the fastest run is the stable statistic)."""
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times)


def best_sdpa(q, k, v, causal: bool, cuda: bool):
    """(ms, backend name) of the fastest SDPA backend that takes (q, k, v); K/V pre-expanded."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    best = (math.inf, "none")
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                    SDPBackend.MATH):
        try:
            with sdpa_kernel([backend]):
                ms = bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), cuda=cuda)
        except RuntimeError:  # this backend does not take the input (head dim, dtype, ...)
            continue
        best = min(best, (ms, backend.name.lower()))
    return best


def best_local(q, k, v, window, dilation, causal):
    """(ms, path) of the faster PyTorch path of local attention (banded or masked SDPA), so that the
    table also shows whether the size rule (fitted on a CPU) picks the faster one on this device."""
    mask = kernels.local_mask(q.shape[2], window=window, dilation=dilation, causal=causal, device=q.device)
    paths = {"torch_banded": partial(local_attention_banded, q, k, v, window=window, dilation=dilation, causal=causal),
             "sdpa_masked": partial(F.scaled_dot_product_attention, q, k, v, attn_mask=mask)}
    return min((bench(fn, cuda=q.is_cuda), name) for name, fn in paths.items())


def rand(*shape, device, dtype, positive=False):
    x = torch.randn(*shape, device=device, dtype=torch.float32)
    return (F.elu(x) + 1 if positive else x).to(dtype)


# ---- shapes ----------------------------------------------------------------------------------
# attention: (B, Hq, Hkv, N, D, causal); local: (B, H, N, D, window, dilation, causal);
# linear: (B, H, N, D, causal)
GPU = dict(
    attention=[(4, 16, 16, 4096, 64, False), (4, 16, 16, 4096, 64, True), (4, 16, 16, 4096, 128, False),
               (4, 16, 16, 4096, 128, True), (4, 32, 8, 4096, 128, True), (8, 1, 1, 4096, 512, False),
               (8, 1, 1, 4096, 512, True)],
    local=[(4, 8, 4096, 64, 255, 1, False), (4, 8, 16384, 64, 255, 1, False), (4, 8, 16384, 64, 128, 1, True),
           (4, 8, 16384, 64, 63, 4, False)],
    linear=[(4, 8, 2048, 64, False), (4, 8, 2048, 64, True), (4, 8, 8192, 64, False), (4, 8, 8192, 64, True)],
)
CPU = dict(
    attention=[(2, 4, 4, 256, 64, False), (2, 4, 4, 256, 64, True), (2, 8, 2, 256, 64, True),
               (1, 1, 1, 256, 512, False)],
    local=[(2, 4, 512, 64, 31, 1, False), (2, 4, 512, 64, 15, 4, True)],
    linear=[(2, 4, 512, 64, False), (2, 4, 512, 64, True)],
    fft_conv=[(2, 64, 256)],
)


def attention_flops(b, h, n, m, d, dv, causal):
    return 2 * b * h * n * m * (d + dv) * (0.5 if causal else 1.0)


def default_path(op, fn, *args, **kwargs) -> str:
    """The path ``fn`` (public op ``op``) takes with ``backend=None``."""
    fn(*args, **kwargs)
    return kernels.last_path(op)


def run_gpu(shapes, dtype, peak, rows, dev="cuda"):
    """The Triton table (``dev="cpu"`` only to check this code under ``TRITON_INTERPRET=1``, tiny shapes)."""
    cuda = dev == "cuda"

    def row(op, shape, k_ms, t_ms, t_name, flops, default):
        tflops = flops / (k_ms * 1e-3) / 1e12
        pct = f"{100 * tflops / peak:.1f}%" if peak and dtype != torch.float32 else "n/a"
        rows.append((op, shape, f"{k_ms:.3f}", f"{t_ms:.3f} ({t_name})", f"{t_ms / k_ms:.2f}x", f"{tflops:.1f}", pct,
                     default))

    with torch.no_grad():
        for b, h, hk, n, d, causal in shapes["attention"]:
            q, k, v = rand(b, h, n, d, device=dev, dtype=dtype), rand(b, hk, n, d, device=dev, dtype=dtype), \
                rand(b, hk, n, d, device=dev, dtype=dtype)
            k_ms = bench(lambda: kernels.attention(q, k, v, causal=causal, backend="triton"), cuda=cuda)
            t_ms, name = best_sdpa(q, k, v, causal, cuda)
            row("attention", f"B{b} H{h}/{hk} N{n} D{d} {'causal' if causal else 'full'}", k_ms, t_ms, f"sdpa:{name}",
                attention_flops(b, h, n, n, d, d, causal), default_path("attention", kernels.attention, q, k, v,
                                                                        causal=causal))
        for b, h, n, d, w, dil, causal in shapes["local"]:
            q, k, v = (rand(b, h, n, d, device=dev, dtype=dtype) for _ in range(3))
            k_ms = bench(lambda: kernels.local_attention(q, k, v, window=w, dilation=dil, causal=causal,
                                                         backend="triton"), cuda=cuda)
            t_ms, name = best_local(q, k, v, w, dil, causal)
            row("local", f"B{b} H{h} N{n} D{d} w{w} dil{dil} {'causal' if causal else 'full'}", k_ms, t_ms,
                name, 2 * b * h * n * min(w, n) * 2 * d,
                default_path("local_attention", kernels.local_attention, q, k, v, window=w, dilation=dil, causal=causal))
        for b, h, n, d, causal in shapes["linear"]:
            q, k = (rand(b, h, n, d, device=dev, dtype=dtype, positive=True) for _ in range(2))
            v = rand(b, h, n, d, device=dev, dtype=dtype)
            k_ms = bench(lambda: kernels.linear_attention(q, k, v, causal=causal, backend="triton"), cuda=cuda)
            t_ms = bench(lambda: kernels.linear_attention(q, k, v, causal=causal, backend="torch"), cuda=cuda)
            flops = 4 * b * h * n * d * d + (2 * b * h * n * 64 * 2 * d if causal else 0)  # + intra-chunk part
            row("linear", f"B{b} H{h} N{n} D{d} {'causal' if causal else 'full'}", k_ms, t_ms,
                kernels.last_path("linear_attention"), flops,
                default_path("linear_attention", kernels.linear_attention, q, k, v, causal=causal))


def run_cpu(shapes, rows):
    dev, cuda, dtype = "cpu", False, torch.float32

    def row(op, shape, r_ms, p_ms, path):
        rows.append((op, shape, f"{r_ms:.3f}", f"{p_ms:.3f}", path, f"{r_ms / p_ms:.2f}x"))

    with torch.no_grad():
        for b, h, hk, n, d, causal in shapes["attention"]:
            q, k, v = rand(b, h, n, d, device=dev, dtype=dtype), rand(b, hk, n, d, device=dev, dtype=dtype), \
                rand(b, hk, n, d, device=dev, dtype=dtype)
            r_ms = bench(lambda: kernels.attention_reference(q, k, v, causal=causal), cuda=cuda)
            p_ms = bench(lambda: kernels.attention(q, k, v, causal=causal), cuda=cuda)
            row("attention", f"B{b} H{h}/{hk} N{n} D{d} {'causal' if causal else 'full'}", r_ms, p_ms,
                kernels.last_path("attention"))
        for b, h, n, d, w, dil, causal in shapes["local"]:
            q, k, v = (rand(b, h, n, d, device=dev, dtype=dtype) for _ in range(3))
            r_ms = bench(lambda: kernels.local_attention_reference(q, k, v, window=w, dilation=dil, causal=causal),
                         cuda=cuda)
            kernels.local_attention(q, k, v, window=w, dilation=dil, causal=causal)
            picked = kernels.last_path("local_attention")
            mask = kernels.local_mask(n, window=w, dilation=dil, causal=causal)
            paths = {"torch_banded": partial(local_attention_banded, q, k, v, window=w, dilation=dil, causal=causal),
                     "sdpa_masked": partial(F.scaled_dot_product_attention, q, k, v, attn_mask=mask)}
            for name, fn in paths.items():  # both PyTorch paths; the public op takes the one marked *
                row("local", f"B{b} H{h} N{n} D{d} w{w} dil{dil} {'causal' if causal else 'full'}", r_ms,
                    bench(fn, cuda=cuda), name + (" *" if name == picked else ""))
        for b, h, n, d, causal in shapes["linear"]:
            q, k = (rand(b, h, n, d, device=dev, dtype=dtype, positive=True) for _ in range(2))
            v = rand(b, h, n, d, device=dev, dtype=dtype)
            r_ms = bench(lambda: kernels.linear_attention_reference(q, k, v, causal=causal), cuda=cuda)
            p_ms = bench(lambda: kernels.linear_attention(q, k, v, causal=causal), cuda=cuda)
            row("linear", f"B{b} H{h} N{n} D{d} {'causal' if causal else 'full'}", r_ms, p_ms,
                kernels.last_path("linear_attention"))
        for b, c, n in shapes["fft_conv"]:
            u, filt = rand(b, c, n, device=dev, dtype=dtype), rand(c, n, device=dev, dtype=dtype)
            small = (u[:, :, :64].contiguous(), filt[:, :64].contiguous())  # the reference is an O(N^2) loop
            r_ms = bench(lambda: kernels.fft_conv_reference(*small), cuda=cuda, reps=3, warmup=1)
            p_ms = bench(lambda: kernels.fft_conv(*small), cuda=cuda)
            row("fft_conv", f"B{b} C{c} N64", r_ms, p_ms, kernels.last_path("fft_conv"))


def print_table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths)) + " |"  # noqa: E731
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="first two shapes per op only")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"], help="GPU dtype")
    args = ap.parse_args()
    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    shapes = GPU if cuda else CPU
    if args.quick:
        shapes = {op: s[:2] for op, s in shapes.items()}
    rows: list[tuple] = []
    print(f"torch {torch.__version__}, python {platform.python_version()}, {platform.machine()}")
    if cuda:
        name = torch.cuda.get_device_name()
        peak = peak_for(name)
        print(f"device: {name} (dense fp16/bf16 peak: {f'{peak:.0f} TFLOP/s' if peak else 'unknown'}), "
              f"dtype {args.dtype}\n")
        run_gpu(shapes, getattr(torch, args.dtype), peak, rows)
        print_table(("op", "shape", "triton ms", "best torch ms (path)", "torch/triton", "TFLOP/s", "% peak",
                     "default path"), rows)
        print("\nfft_conv: torch.fft only (no Triton path; one would have to beat cuFFT, unmeasured).")
    else:
        print(f"device: CPU ({platform.processor() or 'unknown'}, {torch.get_num_threads()} threads)")
        print("No CUDA device: the Triton kernels need a GPU (on CPU they only run under the test "
              "interpreter), so this times the PyTorch reference against the path the public op "
              "takes on CPU, fp32, small shapes.\n")
        run_cpu(shapes, rows)
        print_table(("op", "shape", "reference ms", "public op ms", "path", "speedup"), rows)


if __name__ == "__main__":
    main()
