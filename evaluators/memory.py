"""Peak activation memory of one inference forward on the CPU, counted tensor by tensor.

PyTorch's CPU allocator keeps no statistics (``torch.cuda.max_memory_allocated`` has no CPU
twin), so :class:`PeakMemoryMode` counts for itself. It is a ``TorchDispatchMode``: every aten
operator the forward runs passes through it, and it looks at the storages the operator returns.

- A returned storage that was not among the operator's inputs and is not tracked yet is a new
  allocation: its ``nbytes`` are added to the live total, and a weak reference on the storage
  subtracts them again when the storage is freed. Storages are counted, not tensors, so views
  (``view``, ``transpose``, ``unbind``, slicing) and in-place or ``out=`` results, which return
  a storage already counted or passed in, add nothing.
- Storages that existed before the forward (parameters, buffers, the input) are never counted:
  an operator only returns them when they were among its inputs (a view of a weight, say).
- A tracked storage that an operator resized (``out=`` into a tensor made in the forward) is
  re-counted at its new size.

The peak of the live total is the result: the most bytes that tensors created by the forward
held at one time, above what was allocated before it (the forward's output included, as on
CUDA). It is a count, not a timing: deterministic for a given model, input and PyTorch build, and
independent of machine load and thread count. Python's cyclic garbage collector is paused during
the forward so that when a storage is freed never depends on when the collector happens to run.

What it does not see: the forward runs under ``torch.inference_mode``, exactly as it is timed,
and there composite operators reach the mode whole (``aten.linear``, ``aten.layer_norm``), so
scratch memory *inside* one operator (a contiguous copy ``linear`` makes of a strided input, the
per-thread blocks of SDPA's CPU flash kernel, oneDNN/MKL workspaces) is not counted; every tensor
passed between operators is. Scaled dot-product attention is the exception: it is followed into
the kernel it dispatches to (see ``_DECOMPOSE``), because whether the N x N attention map exists
depends on that choice.
"""

from __future__ import annotations

import gc
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["PeakMemoryMode", "peak_memory_bytes"]

_aten = torch.ops.aten
# operators that return a storage created outside the dispatcher (torch.tensor(...) builds its
# data first, then "lifts" it): their results are new even though they are also their inputs
_FRESH = {_aten.lift_fresh.default, _aten.lift_fresh_copy.default}
# these composite operators run through their decomposition under the mode, so that what is counted is
# what the kernel SDPA picks allocates: the CPU flash kernel works on blocks (nothing N x N), the
# math fallback materializes the attention map, and a boolean mask is first turned into a float one
_DECOMPOSE = {_aten.scaled_dot_product_attention.default, _aten._scaled_dot_product_attention_math.default}


def _storages(tree, meta: bool = False) -> dict[int, torch.UntypedStorage]:
    """The distinct storages of the dense tensors in ``tree``, by ``id`` (those on the ``meta``
    device only when ``meta``)."""
    out = {}
    for t in tree_leaves(tree):
        if isinstance(t, torch.Tensor) and t.layout == torch.strided and (meta or not t.is_meta):
            s = t.untyped_storage()
            out[id(s)] = s
    return out


class PeakMemoryMode(TorchDispatchMode):
    """Counts the bytes of tensor storages allocated while active (see the module docstring).

    ``live`` is the number of bytes currently held by storages created under the mode, ``peak``
    its maximum so far. Storages that outlive the mode stop being followed when it exits.
    Relies on storages keeping their Python object for as long as they live (PyTorch >= 2.1),
    so that ``id`` names a storage and a weak reference to it dies with the memory.

    ``meta=True`` also counts tensors on the ``meta`` device, which hold shapes and no memory: a
    model built and run there shows what its run would allocate, before anything is
    (:mod:`evaluators.model_memory`).
    """

    def __init__(self, meta: bool = False):
        super().__init__()
        self.meta = meta
        self.live = 0
        self.peak = 0
        self._tracked: dict[int, tuple[weakref.ref, int]] = {}  # id(storage) -> (weak ref, bytes)
        self._depth = 0  # the mode re-enters itself to follow a decomposition

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _DECOMPOSE:
            with self:  # the mode is off inside this method; back on for the parts
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:  # (a build without the composite kernel: count it whole)
                return out
        out = func(*args, **kwargs)
        inputs = () if func in _FRESH else _storages((args, kwargs), self.meta)
        for key, s in _storages(out, self.meta).items():
            if key in self._tracked:  # a view or in-place result of a tensor made here; maybe resized
                self._count(key, s, s.nbytes() - self._tracked[key][1])
            elif key not in inputs:
                self._count(key, s, s.nbytes())
        return out

    def _count(self, key: int, s: torch.UntypedStorage, added: int) -> None:
        if key in self._tracked:
            ref, size = self._tracked[key]
        else:
            ref, size = weakref.ref(s, lambda _ref, key=key: self._free(key)), 0
        self._tracked[key] = (ref, size + added)
        self.live += added
        self.peak = max(self.peak, self.live)

    def _free(self, key: int) -> None:
        self.live -= self._tracked.pop(key)[1]

    def __enter__(self):
        self._depth += 1
        return super().__enter__()

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            self._tracked.clear()  # drops the weak references: their callbacks never run after this
        return super().__exit__(*exc)


def peak_memory_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Peak bytes of the tensors one ``model(x)`` allocates (its output included), above what
    was allocated before, under ``torch.inference_mode``. CPU or CUDA tensors alike, but on CUDA
    ``torch.cuda.max_memory_allocated`` also sees workspaces, so ``evaluators.latency`` uses that."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with torch.inference_mode(), PeakMemoryMode() as mode:
            model(x)
    finally:
        if gc_was_enabled:
            gc.enable()
    return mode.peak
