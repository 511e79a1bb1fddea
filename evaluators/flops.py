"""FLOP counting: formulas for the ops the mixers spend their time in, on top of PyTorch's counter.

``torch.utils.flop_counter`` knows matmuls, convolutions and the CUDA attention kernels, but
has no formula for the CPU attention kernel nor for FFTs: by itself it charges softmax
attention on CPU for its projections only, and FNet's or GFNet's token mixing nothing.
:data:`FLOP_FORMULAS` fills those gaps; it is passed to the counter as ``custom_mapping``.

The convention, per forward pass, in real floating-point operations:

* **Matmuls, linear layers, convolutions** (Hyena's short conv too): PyTorch's formulas,
  2 FLOPs per multiply-add. Attention that a mixer writes as matmuls counts as those matmuls.
* **Attention**, every SDPA kernel (CPU flash; CUDA flash, memory-efficient and cuDNN; the
  overrideable and MPS ones): 2 (D_qk + D_v) FLOPs per (query, key) pair, i.e. Q K^T and P V
  as two matmuls (backward: 2 (3 D_qk + 2 D_v) per pair). Dense and ``is_causal`` attention pay
  for all N x M pairs, as PyTorch's own formulas and attention written with matmuls do. A mask
  tensor is read as sparsity: only the pairs it leaves open pay (True in a boolean mask, a
  finite entry in an additive one), so sliding-window attention is charged for its window.
* **Sliding-window attention** (``kernels.local_attention``, ``kernels.neighborhood_attention``)
  therefore counts 2 (D_qk + D_v) FLOPs per (query, key) pair inside the window, whichever path
  the kernel would take: :func:`count_flops` sends windows through the masked SDPA path, since
  the banded path is written in elementwise ops, which are not counted. (That pass holds the
  N x N window mask; ``kernels.local.masked_windows`` scopes the switch to the counting thread.)
* **FFTs**: 5 n log2(n) FLOPs per complex transform of n points (n the product of the
  transformed sizes; the radix-2 Cooley-Tukey count that FFTW's benchmarks use for any n), and
  half that, 2.5 n log2(n), per real-input (rfft) or real-output (irfft) transform. The kind is
  the one PyTorch runs: ``fft`` of a real tensor is a real-input transform, while ``fft2`` and
  ``fftn`` of one (FNet) run complex transforms.
* **Not counted**, by design: elementwise ops (activations, gates, residual adds, scaling,
  feature maps, the complex product of a spectral filter), reductions and cumulative sums,
  softmax, normalization, pooling, resampling, and data movement. Each costs O(1) per element
  it touches, against O(width) for a projection. :func:`is_free` says which ops these are, and
  :func:`uncounted_ops` lists any other op a model calls without a formula (the tests check
  that no registered mixer calls one).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

import kernels.local

__all__ = ["FLOP_FORMULAS", "NOT_COUNTED", "count_flops", "flop_counter", "is_free", "uncounted_ops"]

aten = torch.ops.aten


# ---- attention ----------------------------------------------------------------------------------

def _open_pairs(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> int:
    """(query, key) pairs a mask leaves open, over all batch entries and query heads.
    q (*batch, Hq, N, D), k (*batch, Hkv, M, D); ``mask`` broadcasts to (*batch, Hq, N, M)."""
    dense = math.prod(q.shape[:-1]) * k.shape[-2]
    if mask is None:
        return dense
    is_open = mask if mask.dtype == torch.bool else torch.isfinite(mask)  # -inf: closed
    # a mask broadcasts by repeating its size-1 (and missing) dims: each entry stands for this many
    return int(is_open.sum()) * (dense // is_open.numel())


def _attention_formula(packet, *, backward: bool = False):
    """A raw-argument formula for one SDPA kernel, reading its arguments by the op's schema
    (query, key, value, and attn_mask / attn_bias where it takes one)."""
    names = [a.name for a in packet.default._schema.arguments]

    def formula(*args, out_val=None, **kwargs) -> int:
        a = dict(zip(names, args), **kwargs)
        q, k, v = a["query"], a["key"], a["value"]
        pairs = _open_pairs(q, k, a.get("attn_mask", a.get("attn_bias")))
        d, dv = q.shape[-1], v.shape[-1]
        per_pair = 2 * (3 * d + 2 * dv) if backward else 2 * (d + dv)
        return pairs * per_pair

    formula.__name__ = f"{packet.__name__}_flop"
    formula._get_raw = True  # FlopCounterMode passes the tensors, not their shapes
    return formula


def _aten_ops(*names: str) -> tuple:
    """The aten ops of these names that this PyTorch has (some kernels are newer than others)."""
    return tuple(getattr(aten, n) for n in names if hasattr(aten, n))


# Kernels that take a mask, or that PyTorch has no formula for. The CUDA flash kernel takes no
# mask, so PyTorch's dense formula (which also handles nested tensors) is already ours.
_ATTENTION_FORWARD = _aten_ops(
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
    "_scaled_dot_product_attention_math_for_mps",
)
_ATTENTION_BACKWARD = _aten_ops(
    "_scaled_dot_product_flash_attention_for_cpu_backward",
    "_scaled_dot_product_efficient_attention_backward",
    "_scaled_dot_product_cudnn_attention_backward",
    "_scaled_dot_product_fused_attention_overrideable_backward",
)


# ---- FFTs ---------------------------------------------------------------------------------------

def _fft_flops(n: int, transforms: int, *, real: bool) -> int:
    """FLOPs of ``transforms`` FFTs of ``n`` points each: 5 n log2 n per complex transform,
    half that for a real one (real input or output)."""
    if n <= 1:
        return 0
    per = 5 * n * math.log2(n) / (2 if real else 1)
    return round(transforms * per)


def _fft_size(shape, dim) -> tuple[int, int]:
    """(points per transform, number of transforms) of an FFT over ``dim`` of ``shape``."""
    n = math.prod(shape[d] for d in dim)
    return n, math.prod(shape) // n if n else 0


def _fft_r2c_flop(x_shape, dim, *args, out_shape=None, **kwargs) -> int:
    return _fft_flops(*_fft_size(x_shape, dim), real=True)  # real input


def _fft_c2r_flop(x_shape, dim, *args, out_shape=None, **kwargs) -> int:
    return _fft_flops(*_fft_size(out_shape, dim), real=True)  # real output: its size is the signal's


def _fft_c2c_flop(x_shape, dim, *args, out_shape=None, **kwargs) -> int:
    return _fft_flops(*_fft_size(x_shape, dim), real=False)


FLOP_FORMULAS: dict[Any, Callable[..., int]] = {
    **{op: _attention_formula(op) for op in _ATTENTION_FORWARD},
    **{op: _attention_formula(op, backward=True) for op in _ATTENTION_BACKWARD},
    aten._fft_r2c: _fft_r2c_flop,
    aten._fft_c2r: _fft_c2r_flop,
    aten._fft_c2c: _fft_c2c_flop,
}
"""Our formulas, by aten op, for ``FlopCounterMode(custom_mapping=...)`` (see the module docstring)."""


# ---- what is deliberately not counted -----------------------------------------------------------

NOT_COUNTED: dict[str, tuple[str, ...]] = {
    # besides every op PyTorch tags pointwise (elementwise) or reduction, and every view
    "elementwise, untagged": ("floor_divide", "remainder", "sgn"),
    "softmax": ("_softmax", "_safe_softmax", "_log_softmax"),
    "normalization": ("native_layer_norm", "native_group_norm", "native_batch_norm",
                      "_native_batch_norm_legit_no_training", "_fused_rms_norm"),
    "cumulative sum": ("cumsum", "cumprod", "logcumsumexp"),
    "pooling": ("avg_pool1d", "avg_pool2d", "max_pool1d", "max_pool2d", "max_pool2d_with_indices",
                "_adaptive_avg_pool2d", "adaptive_avg_pool1d", "adaptive_max_pool2d"),
    "resampling": ("upsample_linear1d", "upsample_bilinear2d", "upsample_nearest1d", "upsample_nearest2d",
                   "_upsample_bilinear2d_aa"),
    "selection": ("sort", "topk", "argmax", "argmin", "max", "min", "kthvalue"),
    "data movement": ("_to_copy", "copy_", "clone", "_unsafe_view", "cat", "stack", "constant_pad_nd",
                      "reflection_pad1d", "reflection_pad2d", "replication_pad1d", "replication_pad2d",
                      "index", "index_select", "index_put_", "gather", "scatter", "scatter_", "scatter_add_",
                      "embedding", "repeat", "repeat_interleave", "flip", "roll", "tril", "triu",
                      "masked_scatter", "_local_scalar_dense", "lift_fresh", "lift_fresh_copy", "resolve_conj",
                      "resolve_neg", "_conj", "_conj_physical", "view_as_real", "view_as_complex", "complex"),
    "creation": ("empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "zeros", "zeros_like",
                 "new_zeros", "ones", "ones_like", "new_ones", "full", "full_like", "new_full", "fill_", "zero_",
                 "arange", "linspace", "scalar_tensor", "rand", "rand_like", "randn", "randn_like", "randperm",
                 "bernoulli_", "native_dropout", "uniform_", "normal_"),
}
"""Ops that cost no counted FLOPs, by kind: O(1) work per element they touch."""

_FREE_NAMES = frozenset(name for names in NOT_COUNTED.values() for name in names)
_FREE_TAGS = (torch.Tag.pointwise, torch.Tag.reduction)


def is_free(op: torch._ops.OpOverload) -> bool:
    """Whether ``op`` is left uncounted by design: a view, an op PyTorch tags pointwise or
    reduction, or one of :data:`NOT_COUNTED`."""
    return op.is_view or any(t in op.tags for t in _FREE_TAGS) or op._overloadpacket.__name__ in _FREE_NAMES


# ---- counting -----------------------------------------------------------------------------------

def flop_counter() -> FlopCounterMode:
    """A fresh ``FlopCounterMode`` with :data:`FLOP_FORMULAS`, printing nothing."""
    return FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS)


@contextlib.contextmanager
def _windows_as_masks():
    """Make ``kernels`` run sliding-window attention as SDPA with a window mask (the mask rule
    then counts the window's pairs), not as its banded path of elementwise ops."""
    with kernels.local.masked_windows():
        yield


@torch.no_grad()
def count_flops(fn: Callable, *args, **kwargs) -> int:
    """FLOPs of one call ``fn(*args, **kwargs)`` (a module or any function) by the convention
    of this module. Runs the call once, without gradients."""
    counter = flop_counter()
    with _windows_as_masks(), counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


class _Uncounted(TorchDispatchMode):
    """Records the ops that run without a formula and are not free, decomposing composite ops
    first, as the counter does."""

    def __init__(self):
        super().__init__()
        self.registry = {**flop_registry, **FLOP_FORMULAS}
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func._overloadpacket not in self.registry:
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
            if not is_free(func):
                self.ops.add(str(func._overloadpacket))
        return func(*args, **kwargs)


@torch.no_grad()
def uncounted_ops(fn: Callable, *args, **kwargs) -> set[str]:
    """Names of the ops that ``fn(*args, **kwargs)`` runs with no FLOP formula and that are not
    free by :func:`is_free`: costs the count misses (empty for every registered mixer)."""
    mode = _Uncounted()
    with _windows_as_masks(), mode:
        fn(*args, **kwargs)
    return mode.ops
