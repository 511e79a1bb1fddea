"""Triton linear attention (non-causal two-pass, causal chunked) against the quadratic reference.

Runs through Triton's interpreter on CPU (see ``tests/conftest.py``); tiny, odd shapes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels import linear_attention, linear_attention_reference

pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter grid; GPU grid in test_kernels_gpu.py")

TOL = {torch.float32: 1e-5, torch.float16: 2e-3}


def feature_mapped(b, h, n, d, dv, *, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = F.elu(torch.randn(b, h, n, d, generator=g)) + 1  # positive features, as the mixers make them
    k = F.elu(torch.randn(b, h, n, d, generator=g)) + 1
    v = torch.randn(b, h, n, dv, generator=g)
    return q.to(dtype), k.to(dtype), v.to(dtype)


# (B, H, N, D, Dv, causal, dtype)
CASES = [
    (2, 2, 33, 16, 16, False, torch.float32),
    (1, 2, 33, 20, 64, False, torch.float32),  # D not a power of two, several Dv blocks
    (1, 2, 7, 16, 16, True, torch.float32),    # shorter than one chunk
    (1, 2, 33, 64, 40, True, torch.float32),   # three chunks, ragged Dv
    (1, 2, 33, 16, 32, False, torch.float16),
    (1, 2, 33, 64, 64, True, torch.float16),
]


def _id(c):
    b, h, n, d, dv, causal, dt = c
    return f"B{b}-H{h}-N{n}-D{d}-Dv{dv}-{'causal' if causal else 'full'}-{str(dt).split('.')[-1]}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_linear_attention_matches_reference(case):
    b, h, n, d, dv, causal, dt = case
    q, k, v = feature_mapped(b, h, n, d, dv, dtype=dt)
    out = linear_attention(q, k, v, causal=causal, backend="triton")
    assert kernels.last_path("linear_attention") == "triton"
    want = linear_attention_reference(q.float(), k.float(), v.float(), causal=causal)
    assert out.shape == want.shape and out.dtype == dt
    err = ((out.float() - want).norm() / want.norm()).item()
    assert err < TOL[dt], f"rel err {err:.2e}"


def test_linear_attention_eps_is_used():
    """All-zero features: the output is 0 / (0 + eps) = 0, not NaN, on both paths."""
    q = torch.zeros(1, 1, 9, 16)
    v = torch.randn(1, 1, 9, 16)
    for causal in (False, True):
        for backend in ("triton", "torch"):
            assert torch.equal(linear_attention(q, q, v, causal=causal, backend=backend), torch.zeros_like(v))


def test_linear_attention_causal_wide_head_rejected_by_triton():
    q, k, v = feature_mapped(1, 1, 8, 192, 16, dtype=torch.float32)
    with pytest.raises(ValueError, match="D <= 128"):
        linear_attention(q, k, v, causal=True, backend="triton")


@pytest.mark.parametrize("n", [1, 7, 64, 65, 200], ids=lambda n: f"N{n}")
def test_linear_attention_torch_causal_chunked_matches_reference_and_grads(n):
    """The CPU causal path (chunked, batched matmuls) against the quadratic reference, with grads."""
    q, k, v = (t.requires_grad_() for t in feature_mapped(2, 2, n, 16, 8, dtype=torch.float32, seed=n))
    out = linear_attention(q, k, v, causal=True)
    assert kernels.last_path("linear_attention") == "torch_chunked"
    want = linear_attention_reference(q, k, v, causal=True)
    assert ((out - want).norm() / want.norm()).item() < 1e-5
    g = torch.autograd.grad(out.square().sum(), (q, k, v))
    h = torch.autograd.grad(want.square().sum(), (q, k, v))
    for a, b in zip(g, h):
        assert ((a - b).norm() / b.norm().clamp_min(1.0)).item() < 1e-4  # floor: N=1 has ~0 dq, dk
