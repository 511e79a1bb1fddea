"""Fast ops for the token mixers.

Each op has a pure PyTorch reference and one public function that dispatches to the best path
known to be correct on the device; ``last_path(op)`` says which path the most recent call took.
By default (``backend=None``) every op takes a PyTorch path on every device: SDPA for attention,
banded or masked SDPA for sliding windows (``kernels.local.uses_banded`` picks by size), batched
matmuls for linear attention, torch.fft for ``fft_conv``. The Triton kernels
(``triton_attention``: softmax and sliding-window attention; ``triton_linear``: linear attention)
become a CUDA default only on the device kinds where they are verified
(``kernels.dispatch.VERIFIED_TRITON``: none yet, no GPU has run them); ``backend="triton"`` /
``"torch"`` on the attention ops forces a path (tests use the former on CPU through the
interpreter). On CUDA, the first call of each path per dtype and device in a process runs a
self-check against the reference on a small input and, on a mismatch, warns and falls back
(``kernels.dispatch.SELF_CHECK``). triton is imported only when a kernel is first needed.
Nothing here knows about models.
"""

from kernels.attention_ops import attention, attention_reference
from kernels.dispatch import last_path
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
