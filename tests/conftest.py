"""Test-wide setup. Without a CUDA device, Triton kernels run through Triton's interpreter.

``triton.jit`` reads ``TRITON_INTERPRET`` when a kernel is decorated, i.e. when a
``kernels.triton_*`` module is first imported. Those modules are imported lazily (never by
``import kernels``), so setting the variable here, before any test module is collected, is in
time even if torch or timm imported triton itself already; ``tests/kernels/test_kernels.py`` checks it.
"""

import os


def _cuda_visible() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False
    return torch.cuda.is_available()


if not _cuda_visible():
    os.environ.setdefault("TRITON_INTERPRET", "1")
