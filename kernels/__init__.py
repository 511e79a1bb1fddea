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

Two small modules here are not ops but the bottom of every layer above, so they import no torch:
``kernels.registry`` (the generic :class:`~kernels.registry.Registry` that mixers, FFNs, tasks,
metrics, zero-cost proxies, backends and these ops are registered in) and ``kernels.lazy``
(public names imported on first use). So the ops below are imported on first use too (PEP 562):
``import kernels.registry`` does not import torch.
"""

from kernels.lazy import lazy_exports

_EXPORTS = {
    "attention": "kernels.attention_ops",
    "attention_reference": "kernels.attention_ops",
    "fft_conv": "kernels.fftconv",
    "fft_conv_reference": "kernels.fftconv",
    "last_path": "kernels.dispatch",
    "linear_attention": "kernels.linear",
    "linear_attention_reference": "kernels.linear",
    "local_attention": "kernels.local",
    "local_attention_reference": "kernels.local",
    "local_mask": "kernels.local",
    "neighborhood_attention": "kernels.local",
    "neighborhood_attention_reference": "kernels.local",
    "neighborhood_mask": "kernels.local",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
