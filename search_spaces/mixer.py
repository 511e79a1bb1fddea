"""The mixer contract: the :class:`Mixer` base class and its incremental-decoding cache.

A mixer is a class ``Mixer(dim, *, causal, **params)`` whose ``forward(x[B, N, C], hw=None)``
returns ``[B, N, C]``; what it accepts (parameters, causal use, a 2-D grid, rules) is declared in
the registry (:mod:`search_spaces.mixer_registry`), which needs no torch. A causal mixer also decodes
token by token through a :class:`MixerCache`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn

__all__ = ["Mixer", "MixerCache", "kv_buffers", "split_qkv"]


@dataclass(frozen=True)
class MixerCache:
    """One mixer's decoding state for a batch of sequences after ``pos`` tokens (of ``max_len``).

    ``state``: per-sequence tensors, batch first (KV buffers, recurrent sums, conv tails): what
    :meth:`Mixer.decode_state` counts. Buffers indexed by position are allocated once, for
    ``max_len`` tokens or a window, and written in place at the new positions only; everything
    else is replaced, never modified. ``const``: values fixed when the cache is made and shared
    by the batch (a long-conv filter, a horizon). A step writes only its own position's slots, so
    the cache it started from stays valid and may be stepped again, with another candidate token
    or in a timing loop, without a copy; the buffers are shared, so of two caches stepped from
    the same one only the later is valid.
    """

    pos: int
    max_len: int
    state: dict
    const: dict = field(default_factory=dict)

    def advanced(self, n: int = 1, **state) -> MixerCache:
        """The cache ``n`` tokens later, with the tensors in ``state`` replaced."""
        return replace(self, pos=self.pos + n, state={**self.state, **state})

    def append(self, **new: torch.Tensor) -> tuple:
        """Write each ``new[name]`` (B, H, n, D), the tokens at positions pos..pos+n-1, into the
        buffer ``state[name]`` (B, H, max_len, D); return the buffers' filled parts (B, H, pos+n, D)
        in the order given. The position counter is not moved (see :meth:`advanced`)."""
        out = []
        for name, t in new.items():
            buf = self.state[name]
            end = self.pos + t.shape[2]
            buf[:, :, self.pos : end] = t
            out.append(buf[:, :, :end])
        return tuple(out)

    def state_bytes(self) -> int:
        """Bytes of per-sequence state (``state`` over the batch), for one sequence."""
        total = sum(t.numel() * t.element_size() for t in self.state.values())
        batch = next(iter(self.state.values())).shape[0] if self.state else 1
        return total // batch


def kv_buffers(batch: int, heads: int, length: int, head_dim: int, *, device, dtype) -> dict:
    """Zeroed ``k`` and ``v`` buffers (B, heads, length, head_dim): the state of a KV cache."""
    shape = (batch, heads, length, head_dim)
    return {"k": torch.zeros(shape, device=device, dtype=dtype), "v": torch.zeros(shape, device=device, dtype=dtype)}


def split_qkv(qkv: torch.Tensor, heads: int, head_dim: int) -> tuple[torch.Tensor, ...]:
    """A fused Q/K/V projection (B, N, 3 * heads * head_dim) split into q, k, v, each (B, heads, N, head_dim)."""
    B, N, _ = qkv.shape
    return qkv.view(B, N, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # (3, B, h, N, hd) -> 3 x (B, h, N, hd)


class Mixer(nn.Module):
    """Base class of token mixers. Subclasses call ``super().__init__(dim, causal=causal)``.

    A mixer whose parameters depend on the token layout (a 2-D filter or kernel on an image grid,
    a 1-D one on a sequence) sets ``grid_aware = True`` and takes a ``grid: bool`` keyword; the
    model builder passes ``grid=True`` for image tasks, so no parameter sits unused.

    Incremental decoding (causal mixers built with ``causal=True``, inference semantics, i.e.
    what ``eval()`` computes)::

        cache = mixer.init_cache(batch, max_len)   # empty MixerCache, buffers for max_len tokens
        y, cache = mixer.prefill(x, cache)         # x (B, n, C), n <= max_len: y = forward(x)
        y_t, cache = mixer.step(x_t, cache)        # x_t (B, 1, C): the output at position cache.pos

    Decoding ``max_len`` tokens this way gives ``forward`` over those ``max_len`` tokens at every
    position. Mixers whose weights depend on the sequence length (cosFormer's horizon, Hyena's
    filter positions) take ``max_len`` as that length. Subclasses implement ``_init_cache``
    (-> state, const) and ``_step``; ``_prefill`` defaults to stepping token by token and is
    overridden where a parallel form exists. ``decode_state(n)`` counts what the cache's
    ``state`` holds after ``n`` tokens when ``max_len == n``, in fp32 values (bytes / 4; packed
    sign bits count 1/32 each); the tests check it.
    """

    supports_causal: bool = True
    grid_aware: bool = False

    def __init__(self, dim: int, *, causal: bool = False):
        super().__init__()
        if causal and not self.supports_causal:
            raise ValueError(f"{type(self).__name__} does not support causal use")
        self.dim = dim
        self.causal = causal

    def forward(self, x, hw=None):  # pragma: no cover - abstract
        raise NotImplementedError

    def decode_state(self, n: int):
        """Values (activations) a causal decoder keeps per sequence after ``n`` tokens: the KV
        cache, a recurrent state, a window. None where not defined (non-causal mixers)."""
        return None

    # ------------------------------------------------------------------ incremental decoding
    def init_cache(self, batch: int, max_len: int, *, device=None, dtype=None) -> MixerCache:
        """An empty cache for ``batch`` sequences of up to ``max_len`` tokens (device and dtype
        default to the mixer's parameters')."""
        if not self.causal:
            raise ValueError(f"{type(self).__name__} was built with causal=False; only causal mixers decode "
                             f"token by token")
        if batch < 1 or max_len < 1:
            raise ValueError(f"init_cache needs batch >= 1 and max_len >= 1, got {batch}, {max_len}")
        p = next(self.parameters(), None)
        device = device if device is not None else (p.device if p is not None else "cpu")
        dtype = dtype if dtype is not None else (p.dtype if p is not None else torch.float32)
        state, const = self._init_cache(batch, max_len, torch.device(device), dtype)
        return MixerCache(0, max_len, state, const)

    def prefill(self, x: torch.Tensor, cache: MixerCache) -> tuple[torch.Tensor, MixerCache]:
        """Outputs (B, n, C) for the first n tokens ``x`` (B, n, C), and the cache after them."""
        if cache.pos != 0:
            raise ValueError(f"prefill needs an empty cache, this one holds {cache.pos} tokens; use step")
        if x.dim() != 3 or x.shape[1] > cache.max_len:
            raise ValueError(f"prefill takes (B, n <= {cache.max_len}, C) inputs, got {tuple(x.shape)}")
        if x.shape[1] == 0:
            return x, cache
        return self._prefill(x, cache)

    def step(self, x: torch.Tensor, cache: MixerCache) -> tuple[torch.Tensor, MixerCache]:
        """Output (B, 1, C) for the token ``x`` (B, 1, C) at position ``cache.pos``, and the cache
        one token later; ``cache`` itself stays valid (see :class:`MixerCache`)."""
        if x.dim() != 3 or x.shape[1] != 1:
            raise ValueError(f"step takes one token (B, 1, C), got {tuple(x.shape)}")
        if cache.pos >= cache.max_len:
            raise ValueError(f"the cache is full ({cache.max_len} tokens)")
        return self._step(x, cache)

    def _init_cache(self, batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> tuple[dict, dict]:
        raise NotImplementedError(f"{type(self).__name__} does not implement incremental decoding")

    def _step(self, x, cache):
        raise NotImplementedError(f"{type(self).__name__} does not implement incremental decoding")

    def _prefill(self, x, cache):
        ys = []
        for i in range(x.shape[1]):
            y, cache = self._step(x[:, i : i + 1], cache)
            ys.append(y)
        return torch.cat(ys, dim=1), cache
