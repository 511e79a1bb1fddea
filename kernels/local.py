"""Sliding-window (neighborhood) attention, 1-D with dilation and 2-D over a grid: references,
a banded PyTorch path, and the dispatching ops.

Window rule: query i attends to keys j = i + dilation * t for integer t with |t| <= window // 2
(non-causal) or -(window - 1) <= t <= 0 (causal), clipped to [0, N). ``window`` counts the
keys on the full window (odd when non-causal). Keys outside the window get zero weight.
2-D (``neighborhood_*``, non-causal): on a row-major H x W grid, query (r, c) attends to key
(r', c') iff both axes satisfy the 1-D rule (a window x window neighbourhood on the dilated
lattice through the query, clipped at the borders, not shifted inward).

Two PyTorch paths: *masked* runs SDPA with a boolean (N, N) window mask (O(N^2) memory and
time, few and large operators); *banded* walks the window's offsets, each a shifted slice of
zero-padded K/V, so it holds O(N * (w + D)) values and does O(N * w * D) work, but runs a few
operators per offset. :func:`uses_banded` is the rule that picks between them.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import math

import torch
import torch.nn.functional as F

from kernels.dispatch import Op, checked_path, needs_grad, probe_tensor, record, register, wants_triton

__all__ = [
    "local_attention",
    "local_attention_banded",
    "local_attention_reference",
    "local_mask",
    "masked_windows",
    "neighborhood_attention",
    "neighborhood_attention_banded",
    "neighborhood_attention_reference",
    "neighborhood_mask",
    "uses_banded",
]

# The PyTorch paths take the banded one when N >= _BANDED_BASE + _BANDED_PER_OFFSET * w, w the
# window offsets that fit (see uses_banded). Fitted to benchmarks/local_paths.py on one CPU thread.
_BANDED_BASE = 128
_BANDED_PER_OFFSET = 12


def _check_window(window: int, dilation: int) -> None:
    if window < 1 or dilation < 1:
        raise ValueError(f"window and dilation must be >= 1, got window={window}, dilation={dilation}")


def local_mask(n: int, *, window: int, dilation: int = 1, causal: bool = False, device=None) -> torch.Tensor:
    """Boolean (N, N) mask: True where query i may attend to key j."""
    _check_window(window, dilation)
    i = torch.arange(n, device=device)[:, None]
    j = torch.arange(n, device=device)[None, :]
    off = j - i
    on_grid = (off % dilation) == 0
    t = off // dilation
    if causal:
        inside = (t <= 0) & (t >= -(window - 1))
    else:
        inside = t.abs() <= window // 2
    return on_grid & inside


def neighborhood_mask(hw: tuple[int, int], *, window: int, dilation: int = 1, device=None) -> torch.Tensor:
    """Boolean (H*W, H*W) mask of 2-D dilated neighbourhoods over a row-major grid: both axes
    satisfy the non-causal rule of :func:`local_mask`."""
    H, W = hw
    mh = local_mask(H, window=window, dilation=dilation, causal=False, device=device)  # (H, H)
    mw = local_mask(W, window=window, dilation=dilation, causal=False, device=device)  # (W, W)
    return (mh[:, None, :, None] & mw[None, :, None, :]).reshape(H * W, H * W)


def _check(q, k, v, op="local_attention"):
    if q.dim() != 4 or q.shape != k.shape or q.shape[:3] != v.shape[:3]:
        raise ValueError(f"{op} expects q, k of equal (B, H, N, D) and v (B, H, N, Dv); "
                         f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")


def _check_hw(q, hw):
    if len(hw) != 2 or hw[0] < 1 or hw[1] < 1 or hw[0] * hw[1] != q.shape[2]:
        raise ValueError(f"neighborhood_attention: hw {tuple(hw)} does not match {q.shape[2]} tokens")


def _masked_reference(q, k, v, mask, scale):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ k.transpose(-2, -1)).float() * scale  # (B, H, N, N)
    s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-1).to(v.dtype) @ v


def local_attention_reference(q, k, v, *, window: int, dilation: int = 1, causal: bool = False, scale=None):
    """Naive: full score matrix, masked outside the window. (B, H, N, D) -> (B, H, N, Dv)."""
    _check(q, k, v)
    mask = local_mask(q.shape[2], window=window, dilation=dilation, causal=causal, device=q.device)
    return _masked_reference(q, k, v, mask, scale)


def neighborhood_attention_reference(q, k, v, hw: tuple[int, int], *, window: int, dilation: int = 1, scale=None):
    """Naive 2-D: full score matrix, masked outside each neighbourhood. (B, H, N, D) -> (B, H, N, Dv)."""
    _check(q, k, v, "neighborhood_attention")
    _check_hw(q, hw)
    return _masked_reference(q, k, v, neighborhood_mask(hw, window=window, dilation=dilation, device=q.device),
                             scale)


# ---- banded path ------------------------------------------------------------------------------

def _span(n: int, window: int, dilation: int, causal: bool) -> tuple[int, int]:
    """(lo, hi): the window's offsets t, lo <= t <= hi, less those whose key is outside [0, n)
    for every query (|dilation * t| >= n)."""
    lo, hi = (-(window - 1), 0) if causal else (-(window // 2), window // 2)
    reach = max(n - 1, 0) // dilation
    return max(lo, -reach), min(hi, reach)


def _inside(grid: tuple[int, ...], spans, dilation: int, device) -> torch.Tensor:
    """(*grid, w) bool: whether each query's key at each window offset lies inside the grid."""
    per_axis = []
    for n, (lo, hi) in zip(grid, spans):
        j = torch.arange(n, device=device)[:, None] + dilation * torch.arange(lo, hi + 1, device=device)[None, :]
        per_axis.append((j >= 0) & (j < n))  # (n, w_axis)
    if len(grid) == 1:
        return per_axis[0]
    rows, cols = per_axis
    return (rows[:, None, :, None] & cols[None, :, None, :]).flatten(-2)  # (H, W, w_rows * w_cols)


class _Banded(torch.autograd.Function):
    """Window attention over a row-major grid of 1 or 2 axes, one window offset at a time.

    ``spans[a]`` = (lo, hi): the offsets along axis ``a``; a query's keys are every combination.
    K and V are zero-padded by ``-lo * dilation`` / ``hi * dilation`` along each axis, so that the
    keys at one offset, for all queries at once, are a slice of the padded tensor (a view);
    scores of keys outside the grid are -inf. Scores, softmax and sums are fp32 (or wider).
    Memory: the padded K/V, the (B, H, N, w) probabilities (saved for backward) and one
    (B, H, N, D) temporary. The backward is written out, with the same loop, so that it adds
    into padded gradient buffers in place instead of building one buffer per offset as
    autograd through the slices would (forward + backward 1.6-1.9x faster on one CPU thread at
    2-D window 7, N = 256 and 1024; about even in 1-D). Not twice differentiable.
    """

    @staticmethod
    def _setup(q, k, v, grid, spans, dilation):
        B, nh, _, D = q.shape
        pad = [0, 0]  # F.pad lists the last dim first: (D), then the grid axes from the last
        for lo, hi in reversed(spans):
            pad += [-lo * dilation, hi * dilation]
        qg = q.reshape(B, nh, *grid, D)  # (B, H, *grid, D), a view
        kp = F.pad(k.reshape(B, nh, *grid, D), pad)  # (B, H, *padded grid, D)
        vp = F.pad(v.reshape(B, nh, *grid, v.shape[-1]), pad)  # (B, H, *padded grid, Dv)
        slots = list(itertools.product(*(range(hi - lo + 1) for lo, hi in spans)))  # offset index per axis
        # the keys at offset t = lo + s on every axis, for every query: (B, H, *grid, D), a view
        at = [(..., *(slice(dilation * s, dilation * s + n) for s, n in zip(slot, grid)), slice(None))
              for slot in slots]
        return qg, kp, vp, at, torch.promote_types(q.dtype, torch.float32)

    @staticmethod
    def forward(ctx, q, k, v, grid, spans, dilation, scale):
        qg, kp, vp, at, acc = _Banded._setup(q, k, v, grid, spans, dilation)
        s = torch.stack([(qg * kp[ix]).sum(-1, dtype=acc) for ix in at], -1)  # (B, H, *grid, w)
        s = s.mul_(scale).masked_fill_(~_inside(grid, spans, dilation, q.device), float("-inf"))
        p = torch.softmax(s, dim=-1)  # (B, H, *grid, w)
        out = p[..., :1] * vp[at[0]]  # (B, H, *grid, Dv) in acc
        for i, ix in enumerate(at[1:], 1):
            out.addcmul_(p[..., i : i + 1], vp[ix])
        ctx.save_for_backward(q, k, v, p)
        ctx.args = grid, spans, dilation, scale
        return out.to(v.dtype).reshape(v.shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        q, k, v, p = ctx.saved_tensors
        grid, spans, dilation, scale = ctx.args
        qg, kp, vp, at, acc = _Banded._setup(q, k, v, grid, spans, dilation)
        do = dout.reshape(*vp.shape[:2], *grid, vp.shape[-1]).to(acc)  # (B, H, *grid, Dv)
        dp = torch.stack([(do * vp[ix]).sum(-1, dtype=acc) for ix in at], -1)  # (B, H, *grid, w)
        ds = p * (dp - (p * dp).sum(-1, keepdim=True)) * scale  # softmax backward; 0 outside the grid
        dq = torch.zeros(qg.shape, dtype=acc, device=q.device)
        dkp, dvp = torch.zeros(kp.shape, dtype=acc, device=q.device), torch.zeros(vp.shape, dtype=acc, device=q.device)
        for i, ix in enumerate(at):
            dq.addcmul_(ds[..., i : i + 1], kp[ix])
            dkp[ix].addcmul_(ds[..., i : i + 1], qg)
            dvp[ix].addcmul_(p[..., i : i + 1], do)
        interior = at[_zero_slot(spans)]  # the unpadded positions: offset t = 0 on every axis
        return (dq.to(q.dtype).reshape(q.shape), dkp[interior].to(k.dtype).reshape(k.shape),
                dvp[interior].to(v.dtype).reshape(v.shape), None, None, None, None)


def _zero_slot(spans) -> int:
    """Index, in the row-major list of offsets, of offset 0 on every axis."""
    index = 0
    for lo, hi in spans:
        index = index * (hi - lo + 1) - lo
    return index


def _banded(q, k, v, grid: tuple[int, ...], spans: tuple[tuple[int, int], ...], dilation: int, scale):
    """Banded window attention (see :class:`_Banded`). (B, H, N, D), (B, H, N, D), (B, H, N, Dv) -> (B, H, N, Dv)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return _Banded.apply(q, k, v, tuple(grid), tuple(spans), dilation, scale)


def local_attention_banded(q, k, v, *, window: int, dilation: int = 1, causal: bool = False, scale=None):
    """The banded PyTorch path of :func:`local_attention`, whatever the size (no N x N tensor)."""
    _check(q, k, v)
    _check_window(window, dilation)
    return _banded(q, k, v, (q.shape[2],), (_span(q.shape[2], window, dilation, causal),), dilation, scale)


def neighborhood_attention_banded(q, k, v, hw: tuple[int, int], *, window: int, dilation: int = 1, scale=None):
    """The banded PyTorch path of :func:`neighborhood_attention`, whatever the size."""
    _check(q, k, v, "neighborhood_attention")
    _check_hw(q, hw)
    _check_window(window, dilation)
    spans = tuple(_span(n, window, dilation, False) for n in hw)
    return _banded(q, k, v, tuple(hw), spans, dilation, scale)


_MASKED_ONLY = contextvars.ContextVar("kernels_local_masked_only", default=False)


@contextlib.contextmanager
def masked_windows():
    """Within this context (this thread or task only), windows always take the masked SDPA path, whose
    cost a FLOP counter can see (the banded path is elementwise ops); the result is the same."""
    token = _MASKED_ONLY.set(True)
    try:
        yield
    finally:
        _MASKED_ONLY.reset(token)


def uses_banded(n: int, spans) -> bool:
    """The PyTorch paths' rule: banded iff N >= 128 + 12 w, with w the window offsets that fit in the
    sequence or grid (``spans``: one (lo, hi) per axis, w their product).

    The banded path costs ~0.2 ms plus ~0.03 ms per offset before it does any work (a few small
    operators per offset) and then O(N w D); masked SDPA costs O(N^2 D) from the start. Fitted to
    ``benchmarks/local_paths.py`` (one CPU thread, fp32, B1 H4 D32): 1-D, the paths cross near
    N = 128-256 at w = 3 and 7 and N = 256-1024 at w = 31; at N = 1024, w = 7 masked takes
    ~20-30 ms and banded ~2-6 ms (forward), ~60-85 ms against ~8-9 ms with the backward. 2-D
    crosses a little later (its slices are strided): at 16 x 16, window 3 the rule picks banded
    where masked can be up to ~1.5x faster (about a millisecond). Tables: benchmarks/README.md.
    """
    if _MASKED_ONLY.get():
        return False
    return n >= _BANDED_BASE + _BANDED_PER_OFFSET * math.prod(hi - lo + 1 for lo, hi in spans)


# ---- paths, as the dispatch and its self-check see them ---------------------------------------

def _local_masked(q, k, v, *, window: int, dilation: int = 1, causal: bool = False, scale=None):
    """SDPA with the boolean (N, N) window mask."""
    mask = local_mask(q.shape[2], window=window, dilation=dilation, causal=causal, device=q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def _local_triton(q, k, v, *, window: int, dilation: int = 1, causal: bool = False, scale=None):
    from kernels import triton_attention

    return triton_attention.flash_attention(q, k, v, causal=causal, scale=scale, window=window, dilation=dilation)


def _neighborhood_masked(q, k, v, hw, *, window: int, dilation: int = 1, scale=None):
    """SDPA with the (H*W, H*W) :func:`neighborhood_mask`."""
    mask = neighborhood_mask(hw, window=window, dilation=dilation, device=q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def _qkv(device, dtype, n):
    return tuple(probe_tensor(1, 2, n, 16, seed=s, device=device, dtype=dtype) for s in range(3))  # (B, H, N, D)


def _local_probes(path, device, dtype):
    """Dilated full windows and a causal one, on a sequence longer than the windows."""
    qkv = _qkv(device, dtype, 40)
    return [(qkv, dict(window=7, dilation=2)), (qkv, dict(window=5, causal=True, scale=0.3))]


def _neighborhood_probes(path, device, dtype):
    """A non-square grid, plain and dilated 3 x 3 neighbourhoods."""
    qkv = _qkv(device, dtype, 30)
    return [((*qkv, (5, 6)), dict(window=3)), ((*qkv, (5, 6)), dict(window=3, dilation=2))]


LOCAL_OP = register(Op("local_attention", paths={"triton": _local_triton, "torch_banded": local_attention_banded,
                                                 "sdpa_masked": _local_masked, "reference": local_attention_reference},
                       probes=_local_probes))
NEIGHBORHOOD_OP = register(Op("neighborhood_attention",
                              paths={"torch_banded": neighborhood_attention_banded, "sdpa_masked": _neighborhood_masked,
                                     "reference": neighborhood_attention_reference},
                              probes=_neighborhood_probes))


def _torch_paths(banded: bool) -> list[str]:
    """The PyTorch path the size rule picks, then the other one, then the reference."""
    return ["torch_banded", "sdpa_masked", "reference"] if banded else ["sdpa_masked", "torch_banded", "reference"]


# ---- public ops -------------------------------------------------------------------------------

def local_attention(q, k, v, *, window: int, dilation: int = 1, causal: bool = False, scale=None,
                    backend: str | None = None):
    """Sliding-window attention (see module docstring for the window rule).

    Dispatch (``backend=None``): a PyTorch path on every device, either the banded one
    (:func:`local_attention_banded`: O(N w D) time, no N x N tensor) or SDPA with a boolean
    (N, N) window mask (O(N^2)), by :func:`uses_banded`: banded iff N >= 128 + 12 w, w the
    window offsets that fit in the sequence. The Triton kernel (``kernels.triton_attention`` in
    window mode: visits only the key blocks that meet the window; with gradients required, head
    dims up to 256) becomes the CUDA default only on device kinds listed in
    ``kernels.dispatch.VERIFIED_TRITON`` (none yet). On CUDA the first call per path, dtype and
    device self-checks the path against :func:`local_attention_reference` and, on a mismatch,
    warns and falls back to the other PyTorch path, then the reference. ``backend="triton"``
    forces the kernel (on CPU under ``TRITON_INTERPRET=1``), ``backend="torch"`` forces PyTorch;
    neither is self-checked. Call :func:`local_attention_banded` to force the banded path.
    ``kernels.last_path("local_attention")`` reports ``"triton"``, ``"torch_banded"``,
    ``"sdpa_masked"`` or ``"reference"``.
    """
    _check(q, k, v)
    _check_window(window, dilation)
    n = q.shape[2]
    candidates = _torch_paths(uses_banded(n, (_span(n, window, dilation, causal),)))
    if wants_triton("local_attention", backend, q, k, v):
        from kernels import triton_attention

        reason = triton_attention.supports(q, k, v, needs_grad=needs_grad(q, k, v))
        if reason is None:
            candidates.insert(0, "triton")
        elif backend == "triton":
            raise ValueError(f"local_attention: the Triton kernel does not take this input: {reason}")
    path = checked_path(LOCAL_OP, candidates, q) if backend is None else candidates[0]
    record("local_attention", path)
    return LOCAL_OP.paths[path](q, k, v, window=window, dilation=dilation, causal=causal, scale=scale)


def neighborhood_attention(q, k, v, hw: tuple[int, int], *, window: int, dilation: int = 1, scale=None):
    """2-D dilated neighbourhood attention over a row-major ``hw`` grid (module docstring).

    No Triton kernel: PyTorch on every device, by the rule of :func:`uses_banded` with w the
    window x window offsets that fit in the grid: banded (:func:`neighborhood_attention_banded`)
    iff H * W >= 128 + 12 w, else SDPA with the (H*W, H*W) :func:`neighborhood_mask`. On CUDA the
    first call per path, dtype and device is self-checked as in :func:`local_attention`.
    ``kernels.last_path("neighborhood_attention")`` reports ``"torch_banded"``, ``"sdpa_masked"``
    or ``"reference"``.
    """
    _check(q, k, v, "neighborhood_attention")
    _check_hw(q, hw)
    _check_window(window, dilation)
    spans = tuple(_span(n, window, dilation, False) for n in hw)
    path = checked_path(NEIGHBORHOOD_OP, _torch_paths(uses_banded(q.shape[2], spans)), q)
    record("neighborhood_attention", path)
    return NEIGHBORHOOD_OP.paths[path](q, k, v, hw, window=window, dilation=dilation, scale=scale)
