"""Fast ops for the token mixers.

Each op has a pure PyTorch reference and one public function that dispatches to the fastest
path the device supports; ``last_path(op)`` says which path the most recent call took.
Triton kernels (``triton_attention``: softmax and sliding-window attention; ``triton_linear``:
linear attention) run for CUDA tensors only; CPU tensors always take PyTorch paths, even under
``TRITON_INTERPRET=1``. ``backend="triton"`` / ``"torch"`` on the attention ops forces a path
(tests use the former on CPU through the interpreter). Sliding-window attention (1-D
``local_attention``, 2-D ``neighborhood_attention``) has two PyTorch paths, banded and masked
SDPA, picked by size (``kernels.local.uses_banded``). ``fft_conv`` is torch.fft everywhere.
triton is imported only when a kernel is first needed. Nothing here knows about models.
"""

from kernels._dispatch import last_path
from kernels.attention import attention, attention_reference
from kernels.fftconv import fft_conv, fft_conv_reference
from kernels.linear import linear_attention, linear_attention_reference
from kernels.local import (
    local_attention,
    local_attention_reference,
    local_mask,
    neighborhood_attention,
    neighborhood_attention_reference,
    neighborhood_mask,
)

__all__ = [
    "attention",
    "attention_reference",
    "fft_conv",
    "fft_conv_reference",
    "last_path",
    "linear_attention",
    "linear_attention_reference",
    "local_attention",
    "local_attention_reference",
    "local_mask",
    "neighborhood_attention",
    "neighborhood_attention_reference",
    "neighborhood_mask",
]
