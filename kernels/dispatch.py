"""Bookkeeping of which implementation each public op used last, and the backend choice."""

from __future__ import annotations

import importlib.util

import torch

_LAST: dict[str, str] = {}
BACKENDS = (None, "torch", "triton")


def record(op: str, path: str) -> None:
    _LAST[op] = path


def last_path(op: str) -> str | None:
    """Name of the path the most recent call of ``op`` took (``None`` if never called)."""
    return _LAST.get(op)


def triton_available() -> bool:
    """Whether triton can be imported (it is never imported just to answer this)."""
    return importlib.util.find_spec("triton") is not None


def wants_triton(op: str, backend: str | None, *tensors: torch.Tensor) -> bool:
    """Whether ``op`` should try its Triton kernels.

    ``backend=None`` (the default): only for CUDA tensors when triton is installed; CPU tensors
    always take the PyTorch path, even under ``TRITON_INTERPRET=1`` (the interpreter is far too
    slow for models). ``"triton"`` forces the kernels (tests use it on CPU with the interpreter);
    ``"torch"`` forces the PyTorch path.
    """
    if backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of None, 'torch', 'triton', got {backend!r}")
    if backend == "torch":
        return False
    if backend == "triton":
        if not triton_available():
            raise ValueError(f"{op}: backend='triton' but triton is not installed")
        return True
    return all(t.is_cuda for t in tensors) and triton_available()


def needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
