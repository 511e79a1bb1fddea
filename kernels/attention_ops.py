"""Scaled dot-product attention: reference and dispatching op."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kernels.dispatch import Op, checked_path, needs_grad, probe_tensor, record, register, wants_triton

__all__ = ["attention", "attention_reference"]


def _check(q, k, v):
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"attention expects (B, H, N, D) tensors, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[0] != k.shape[0] or k.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"attention shapes do not match: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"query heads {q.shape[1]} are not a multiple of key/value heads {k.shape[1]}")


def attention_reference(q, k, v, *, causal: bool = False, scale: float | None = None):
    """Naive softmax(Q K^T * scale) V. q: (B, Hq, N, D); k, v: (B, Hkv, M, D[v]); Hkv divides Hq."""
    _check(q, k, v)
    rep = q.shape[1] // k.shape[1]
    if rep > 1:  # grouped K/V: each K/V head serves `rep` consecutive query heads
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ k.transpose(-2, -1)) * scale  # (B, H, N, M)
    if causal:
        n, m = s.shape[-2:]
        mask = torch.ones(n, m, dtype=torch.bool, device=s.device).tril(m - n)
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s.float(), dim=-1).to(v.dtype) @ v


def _sdpa(q, k, v, *, causal: bool = False, scale: float | None = None):
    """PyTorch's ``scaled_dot_product_attention`` (it picks flash / memory-efficient / cuDNN / math)."""
    rep = q.shape[1] // k.shape[1]
    if rep > 1:
        k = k.repeat_interleave(rep, dim=1)  # (B, Hq, M, D)
        v = v.repeat_interleave(rep, dim=1)
    n, m = q.shape[2], k.shape[2]
    if causal and n != m:  # SDPA's is_causal is top-left aligned; keep the reference's rule
        mask = torch.ones(n, m, dtype=torch.bool, device=q.device).tril(m - n)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)


def _triton(q, k, v, *, causal: bool = False, scale: float | None = None):
    from kernels import triton_attention

    return triton_attention.flash_attention(q, k, v, causal=causal, scale=scale)


def _probes(path, device, dtype):
    """Grouped K/V, full and causal, equal and cross lengths (causal bottom-right)."""
    t = lambda *shape, seed: probe_tensor(*shape, seed=seed, device=device, dtype=dtype)  # noqa: E731
    q, k, v = t(1, 4, 17, 16, seed=0), t(1, 2, 17, 16, seed=1), t(1, 2, 17, 16, seed=2)
    return [((q, k, v), dict(causal=False)), ((q, k, v), dict(causal=True)),
            ((q[:, :, :9], k, v), dict(causal=True, scale=0.3))]


OP = register(Op("attention", paths={"triton": _triton, "sdpa": _sdpa, "reference": attention_reference},
                 probes=_probes))


def attention(q, k, v, *, causal: bool = False, scale: float | None = None, backend: str | None = None):
    """Softmax attention, (B, Hq, N, D) x (B, Hkv, M, D) -> (B, Hq, N, Dv).

    Causal masking is bottom-right aligned when N != M (query i sees keys j <= i + M - N), as in
    :func:`attention_reference`.

    Dispatch (``backend=None``): PyTorch's ``scaled_dot_product_attention`` on every device. The
    fused Triton kernel (``kernels.triton_attention``: fp16/bf16/fp32, head dims up to 512; with
    gradients required, head dims up to 256) becomes the CUDA default only on device kinds listed
    in ``kernels.dispatch.VERIFIED_TRITON`` (none yet: it has not run on a GPU). On CUDA the first
    call per dtype and device self-checks the path against :func:`attention_reference` on a small
    input and falls back (``"sdpa"`` -> ``"reference"``) with a warning on a mismatch.
    ``backend="triton"`` forces the kernel (ValueError if it cannot take the input; on CPU it runs
    under ``TRITON_INTERPRET=1``), ``backend="torch"`` forces SDPA; neither is self-checked.
    ``kernels.last_path("attention")`` reports ``"triton"``, ``"sdpa"`` or ``"reference"``.
    """
    _check(q, k, v)
    path = "sdpa"
    if wants_triton("attention", backend, q, k, v):
        from kernels import triton_attention

        reason = triton_attention.supports(q, k, v, needs_grad=needs_grad(q, k, v))
        if reason is None:
            path = "triton"
        elif backend == "triton":
            raise ValueError(f"attention: the Triton kernel does not take this input: {reason}")
    if backend is None:
        path = checked_path(OP, list(dict.fromkeys([path, "sdpa", "reference"])), q)
    record("attention", path)
    return OP.paths[path](q, k, v, causal=causal, scale=scale)
