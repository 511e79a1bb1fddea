"""How the public ops pick a path: backend choice, verified kernels, the one-time self-check.

Each public op registers an :class:`Op`: its paths (each a plain function taking the op's arguments)
and small probe inputs. With ``backend=None`` an op takes its default path; the first time a path
runs on a (dtype, device) in a process, and the path is listed in :data:`SELF_CHECK` for that
device type, :func:`checked_path` runs it on the probes, compares it with the op's
``"reference"`` path, and on a mismatch (or an exception) warns once and falls back to the next
path the op named, ending at the reference. A forced ``backend`` is never checked and never
falls back.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from kernels.registry import Registry

__all__ = ["BACKEND_CHOICES", "OPS", "SELF_CHECK", "VERIFIED_TRITON", "Op", "checked_path", "device_kind",
           "last_path", "needs_grad", "probe_tensor", "record", "register", "reset_self_checks",
           "self_check", "triton_available", "triton_is_default", "wants_triton"]

BACKEND_CHOICES = (None, "torch", "triton")  # what an op's backend= argument takes

# Where each op's Triton kernel is the default (backend=None), by device kind (:func:`device_kind`,
# e.g. "cuda:sm90" for H100/H200). A kernel goes in only after tests/kernels/test_kernels_gpu.py passed on
# that kind and benchmarks/kernel_speed.py showed it beating the PyTorch path there (benchmarks/gpu_check.sh
# runs both). None has: no GPU has run them yet, so on CUDA every op defaults to its PyTorch path
# (SDPA, banded / masked SDPA, batched matmuls, torch.fft) and backend="triton" forces a kernel.
VERIFIED_TRITON: dict[str, frozenset[str]] = {}

# Device types on which each path is self-checked the first time it runs per (op, dtype, device).
# Every path on CUDA: no GPU has run the test suite. CPU paths are what the suite tests (on CPU).
SELF_CHECK: dict[str, frozenset[str]] = {
    path: frozenset({"cuda"})
    for path in ("triton", "sdpa", "sdpa_masked", "torch_banded", "torch_matmul", "torch_chunked", "torch.fft",
                 "conv1d")
}

# Relative error (L2, against the reference in fp32) a path may show on the probes. A broken path is
# off by O(1); fp32 allows TF32 dots.
_TOL = {torch.float16: 1e-2, torch.bfloat16: 4e-2}
_TOL_DEFAULT = 5e-3

_LAST: dict[str, str] = {}
_VERDICTS: dict[tuple, bool] = {}


@dataclass(frozen=True)
class Op:
    """One public op's paths, as the self-check sees them.

    ``paths`` maps a path name to a function taking the op's arguments (no dispatch, no checks);
    ``"reference"`` is the naive implementation every path is compared with. ``probes(path,
    device, dtype)`` returns small ``(args, kwargs)`` cases that the path takes.
    """

    name: str
    paths: dict[str, Callable]
    probes: Callable[[str, torch.device, torch.dtype], list[tuple[tuple, dict]]]


# op name -> its Op; each op's module registers it when imported (all of them on first use of OPS)
OPS: Registry[Op] = Registry("kernel op", builtins=("kernels.attention_ops", "kernels.fftconv", "kernels.linear",
                                                    "kernels.local"))


def register(op: Op) -> Op:
    """Add ``op`` to :data:`OPS` under its name; ValueError if an op has that name already."""
    return OPS.add(op.name, op)


def record(op: str, path: str) -> None:
    _LAST[op] = path


def last_path(op: str) -> str | None:
    """Name of the path the most recent call of ``op`` took (``None`` if never called)."""
    return _LAST.get(op)


def triton_available() -> bool:
    """Whether triton can be imported (it is never imported just to answer this)."""
    return importlib.util.find_spec("triton") is not None


def device_kind(device: torch.device) -> str:
    """``"cuda:sm90"`` (compute capability) for a CUDA device, else the device type."""
    if device.type != "cuda":
        return device.type
    major, minor = torch.cuda.get_device_capability(device)
    return f"cuda:sm{major}{minor}"


def triton_is_default(op: str, kind: str) -> bool:
    """Whether ``op``'s Triton kernel is the default on device kind ``kind`` (:data:`VERIFIED_TRITON`)."""
    return kind in VERIFIED_TRITON.get(op, frozenset())


def wants_triton(op: str, backend: str | None, *tensors: torch.Tensor) -> bool:
    """Whether ``op`` should try its Triton kernels.

    ``backend=None`` (the default): only for CUDA tensors, with triton installed, on a device kind
    where the kernel is verified (:data:`VERIFIED_TRITON`, empty so far); CPU tensors always take
    the PyTorch path, even under ``TRITON_INTERPRET=1``. ``"triton"`` forces the kernels (tests use
    it on CPU with the interpreter); ``"torch"`` forces the PyTorch path.
    """
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"{op}: backend must be one of None, 'torch', 'triton', got {backend!r}")
    if backend == "torch":
        return False
    if backend == "triton":
        if not triton_available():
            raise ValueError(f"{op}: backend='triton' but triton is not installed")
        return True
    return (all(t.is_cuda for t in tensors) and triton_available()
            and triton_is_default(op, device_kind(tensors[0].device)))


def needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def probe_tensor(*shape: int, seed: int, device, dtype, positive: bool = False) -> torch.Tensor:
    """A seeded random probe input (drawn on the CPU, so every device sees the same values)."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return (torch.nn.functional.elu(x) + 1 if positive else x).to(device=device, dtype=dtype)


def self_check(op: Op, path: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """Run ``path`` on ``op``'s probes and compare its forward with the reference in fp32 (no
    gradients, autocast off): ``None`` when it agrees, else what went wrong."""
    tol = _TOL.get(dtype, _TOL_DEFAULT)
    reference = op.paths["reference"]
    with torch.no_grad(), torch.autocast(device.type, enabled=False):
        for args, kwargs in op.probes(path, device, dtype):
            try:
                got = op.paths[path](*args, **kwargs)
            except Exception as e:  # a kernel that cannot even run here fails its check
                return f"raised {type(e).__name__}: {e}"
            want = reference(*(a.float() if torch.is_tensor(a) else a for a in args), **kwargs)
            if got.shape != want.shape:
                return f"shape {tuple(got.shape)}, reference {tuple(want.shape)} ({kwargs})"
            err = ((got.float() - want).norm() / want.norm().clamp_min(1e-12)).item()
            if not math.isfinite(err) or err > tol:
                return f"relative error {err:.2e} against the reference, allowed {tol:.0e} ({kwargs})"
    return None


def checked_path(op: Op, candidates: Sequence[str], like: torch.Tensor) -> str:
    """The first of ``candidates`` (the path to take, then its fallbacks) that passes its
    self-check on ``like``'s dtype and device; a warning names each failure, once per process.

    A path is checked once per (op, path, dtype, device) and only where :data:`SELF_CHECK` asks;
    the last candidate is taken unchecked. Nothing is checked while tracing, compiling or capturing
    a CUDA graph (the probes would become part of the graph).
    """
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or (
            like.is_cuda and torch.cuda.is_current_stream_capturing()):
        return candidates[0]
    for path, fallback in zip(candidates, candidates[1:]):
        if like.device.type not in SELF_CHECK.get(path, ()):
            return path
        key = (op.name, path, like.dtype, str(like.device))
        if key not in _VERDICTS:
            failure = self_check(op, path, like.device, like.dtype)
            _VERDICTS[key] = failure is None
            if failure is not None:
                warnings.warn(f"kernels.{op.name}: path {path!r} failed its self-check on {like.device} "
                              f"{like.dtype}: {failure}; using {fallback!r} instead in this process",
                              RuntimeWarning, stacklevel=3)
        if _VERDICTS[key]:
            return path
    return candidates[-1]


def reset_self_checks() -> None:
    """Forget every self-check verdict (the next call of each path checks it again)."""
    _VERDICTS.clear()
