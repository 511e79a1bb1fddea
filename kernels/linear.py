"""Kernelized (linear) attention on feature-mapped queries and keys: reference and op.

Inputs are already feature-mapped (e.g. elu(x) + 1 >= 0): q, k (B, H, N, D), v (B, H, N, Dv).
Non-causal: out_i = q_i (sum_j k_j^T v_j) / (q_i . sum_j k_j + eps).
Causal:     out_i = q_i (sum_{j<=i} k_j^T v_j) / (q_i . sum_{j<=i} k_j + eps)  (prefix sums).
"""

from __future__ import annotations

import torch

from kernels.dispatch import Op, checked_path, needs_grad, probe_tensor, record, register, wants_triton

__all__ = ["linear_attention", "linear_attention_reference"]


def _check(q, k, v):
    if q.dim() != 4 or q.shape != k.shape or q.shape[:3] != v.shape[:3]:
        raise ValueError(f"linear_attention expects q, k of equal (B, H, N, D) and v (B, H, N, Dv); "
                         f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")


def linear_attention_reference(q, k, v, *, causal: bool = False, eps: float = 1e-6):
    """Quadratic form of the same computation: (q k^T, causally masked) v, row-normalized."""
    _check(q, k, v)
    a = (q @ k.transpose(-2, -1)).float()  # (B, H, N, N)
    if causal:
        a = a.tril()
    return ((a @ v.float()) / (a.sum(-1, keepdim=True) + eps)).to(v.dtype)


def _causal_chunked(q, k, v, eps: float, chunk: int = 64):
    """Causal linear attention in chunks: tril(Q_c K_c^T) V_c plus Q_c times the state of all
    earlier chunks (an exclusive prefix sum of the per-chunk K_c^T V_c). fp32 in, fp32 out."""
    B, H, N, D = q.shape
    pad = (-N) % chunk  # zero rows at the end change nothing for the rows before them
    if pad:
        q, k, v = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    nc = (N + pad) // chunk
    qc, kc, vc = (t.reshape(B, H, nc, chunk, t.shape[-1]) for t in (q, k, v))  # (B, H, nc, C, D|Dv)
    kv = kc.transpose(-2, -1) @ vc  # (B, H, nc, D, Dv) state added by each chunk
    state = kv.cumsum(dim=2) - kv  # exclusive: chunks strictly before
    ksum = kc.sum(dim=3)  # (B, H, nc, D)
    z = ksum.cumsum(dim=2) - ksum
    a = (qc @ kc.transpose(-2, -1)).tril()  # (B, H, nc, C, C) causal inside the chunk
    num = a @ vc + qc @ state  # (B, H, nc, C, Dv)
    den = a.sum(-1, keepdim=True) + (qc * z.unsqueeze(3)).sum(-1, keepdim=True)
    out = (num / (den + eps)).reshape(B, H, nc * chunk, -1)  # (B, H, N + pad, Dv)
    return out[:, :, :N]


def _torch_matmul(q, k, v, *, causal: bool = False, eps: float = 1e-6):
    """Non-causal: two matmuls through the (D, Dv) state, in fp32."""
    if causal:
        raise ValueError("linear_attention: the 'torch_matmul' path is non-causal only")
    qf, kf, vf = q.float(), k.float(), v.float()
    kv = kf.transpose(-2, -1) @ vf  # (B, H, D, Dv)
    den = qf @ kf.sum(dim=2, keepdim=True).transpose(-2, -1)  # (B, H, N, 1)
    return ((qf @ kv) / (den + eps)).to(v.dtype)


def _torch_chunked(q, k, v, *, causal: bool = True, eps: float = 1e-6):
    """Causal: :func:`_causal_chunked` in fp32."""
    if not causal:
        raise ValueError("linear_attention: the 'torch_chunked' path is causal only")
    return _causal_chunked(q.float(), k.float(), v.float(), eps).to(v.dtype)


def _triton(q, k, v, *, causal: bool = False, eps: float = 1e-6):
    from kernels import triton_linear

    return triton_linear.linear_attention_triton(q, k, v, causal=causal, eps=eps)


def _probes(path, device, dtype):
    """Feature-mapped (positive) q, k over two causal chunks and a ragged tail; Dv != D."""
    t = lambda *shape, seed, pos=True: probe_tensor(*shape, seed=seed, device=device, dtype=dtype,  # noqa: E731
                                                    positive=pos)
    q, k, v = t(1, 2, 70, 16, seed=0), t(1, 2, 70, 16, seed=1), t(1, 2, 70, 8, seed=2, pos=False)
    causal = {"torch_matmul": [False], "torch_chunked": [True]}.get(path, [False, True])
    return [((q, k, v), dict(causal=c)) for c in causal]


OP = register(Op("linear_attention",
                 paths={"triton": _triton, "torch_matmul": _torch_matmul, "torch_chunked": _torch_chunked,
                        "reference": linear_attention_reference},
                 probes=_probes))


def linear_attention(q, k, v, *, causal: bool = False, eps: float = 1e-6, backend: str | None = None):
    """Linear-time attention; ``kernels.last_path("linear_attention")`` says which path ran.

    Dispatch (``backend=None``): PyTorch on every device: non-causal two matmuls through the
    (D, Dv) state (``"torch_matmul"``), causal the chunked form of the Triton kernel in batched
    matmuls (``"torch_chunked"``, memory O(N C + N/C D Dv) for chunk C = 64, instead of
    O(N D Dv) for a cumulative sum of k_j^T v_j). The Triton kernels (``kernels.triton_linear``:
    two-pass non-causal, chunked causal with D <= 128; forward only) become the CUDA default
    without gradients only on device kinds listed in ``kernels.dispatch.VERIFIED_TRITON`` (none
    yet). On CUDA the first call per path, dtype and device self-checks the path against
    :func:`linear_attention_reference` and falls back to ``"reference"`` with a warning on a
    mismatch. ``backend="triton"`` forces the kernels (forward only: a ValueError if gradients are
    required; on CPU under ``TRITON_INTERPRET=1``), ``backend="torch"`` forces PyTorch; neither is
    self-checked.
    """
    _check(q, k, v)
    torch_path = path = "torch_chunked" if causal else "torch_matmul"
    if wants_triton("linear_attention", backend, q, k, v):
        from kernels import triton_linear

        reason = triton_linear.supports(q, k, v, causal=causal)
        if reason is None and needs_grad(q, k, v):
            reason = "the Triton kernels are forward-only and gradients are required"
        if reason is None:
            path = "triton"
        elif backend == "triton":
            raise ValueError(f"linear_attention: the Triton kernels do not take this input: {reason}")
    if backend is None:
        path = checked_path(OP, list(dict.fromkeys([path, torch_path, "reference"])), q)
    record("linear_attention", path)
    return OP.paths[path](q, k, v, causal=causal, eps=eps)
