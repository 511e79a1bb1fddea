"""The kernel comparisons at real sizes on a CUDA device (marked ``gpu``; skipped without CUDA).

Run with ``pytest -m gpu tests/test_kernels_gpu.py`` on a machine with a GPU. References run in
fp32 on the same device; fp32 kernels use TF32 tensor-core dots, hence the looser fp32 bound.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels import (attention, attention_reference, linear_attention, linear_attention_reference,
                     local_attention, local_attention_reference)

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TOL = {torch.float32: 5e-3, torch.float16: 5e-3, torch.bfloat16: 2e-2}


def rel_err(a, b, floor=1e-12):
    a, b = a.float(), b.float()
    assert torch.isfinite(a).all()
    return ((a - b).norm() / b.norm().clamp_min(floor)).item()


def make(*shape, dtype, seed, grad=False):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return torch.randn(*shape, generator=g, device="cuda").to(dtype).requires_grad_(grad)


def compare(fn, ref, q, k, v, *, bwd, tol):
    out = fn(q, k, v)
    want = ref(*(t.detach().float() for t in (q, k, v)))
    assert rel_err(out, want) < tol
    if bwd:
        do = make(*out.shape, dtype=out.dtype, seed=9)
        got = torch.autograd.grad(out, (q, k, v), do)
        qf, kf, vf = (t.detach().float().requires_grad_() for t in (q, k, v))
        exp = torch.autograd.grad(ref(qf, kf, vf), (qf, kf, vf), do.float())
        for a, b in zip(got, exp):
            assert rel_err(a, b, floor=1.0) < 2 * tol


# (B, Hq, Hkv, N, M, D, Dv, causal, backward)
ATTN = [
    (2, 8, 8, 1024, 1024, 64, 64, False, True),
    (2, 8, 8, 1024, 1024, 64, 64, True, True),
    (2, 8, 2, 1000, 1000, 128, 128, True, True),   # GQA, ragged length
    (2, 8, 1, 777, 1029, 128, 128, False, True),   # MQA, cross lengths
    (1, 4, 4, 513, 513, 96, 96, True, True),
    (1, 2, 2, 1024, 1024, 256, 256, True, True),    # backward above D = 128: 32 x 32 tiles
    (2, 4, 2, 1000, 1000, 256, 256, False, True),   # GQA, ragged length
    (1, 4, 1, 777, 1029, 160, 160, True, True),     # MQA, cross lengths, head padded to 256
    (1, 2, 2, 513, 513, 192, 256, False, True),     # Dv != D
    (1, 1, 1, 2048, 2048, 512, 512, False, False),  # single head, wide
    (1, 1, 1, 2048, 2048, 512, 512, True, False),
]
DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def _id(c):
    b, h, hk, n, m, d, dv, causal, bwd = c
    return f"B{b}-H{h}-kv{hk}-N{n}-M{m}-D{d}-{'causal' if causal else 'full'}{'-bwd' if bwd else ''}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("case", ATTN, ids=[_id(c) for c in ATTN])
def test_attention_gpu(case, dtype):
    b, h, hk, n, m, d, dv, causal, bwd = case
    q, k, v = make(b, h, n, d, dtype=dtype, seed=0, grad=bwd), make(b, hk, m, d, dtype=dtype, seed=1, grad=bwd), \
        make(b, hk, m, dv, dtype=dtype, seed=2, grad=bwd)
    compare(lambda *t: attention(*t, causal=causal), lambda *t: attention_reference(*t, causal=causal),
            q, k, v, bwd=bwd, tol=TOL[dtype])
    assert kernels.last_path("attention") == "triton"


LOCAL = [(4096, 64, 255, 1, False), (4096, 64, 128, 1, True), (4095, 128, 63, 4, False), (2048, 64, 31, 3, True)]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("case", LOCAL, ids=[f"N{n}-D{d}-w{w}-dil{dl}-{'causal' if c else 'full'}" for n, d, w, dl, c in LOCAL])
def test_local_attention_gpu(case, dtype):
    n, d, w, dil, causal = case
    q, k, v = (make(1, 4, n, d, dtype=dtype, seed=s, grad=True) for s in range(3))
    compare(lambda *t: local_attention(*t, window=w, dilation=dil, causal=causal),
            lambda *t: local_attention_reference(*t, window=w, dilation=dil, causal=causal),
            q, k, v, bwd=True, tol=TOL[dtype])
    assert kernels.last_path("local_attention") == "triton"


LINEAR = [(2, 8, 4096, 64, 64, False), (2, 8, 4096, 64, 64, True), (1, 4, 2047, 128, 96, True), (1, 4, 3000, 256, 128, False)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("case", LINEAR, ids=[f"B{b}-H{h}-N{n}-D{d}-Dv{dv}-{'causal' if c else 'full'}" for b, h, n, d, dv, c in LINEAR])
def test_linear_attention_gpu(case, dtype):
    b, h, n, d, dv, causal = case
    q = F.elu(make(b, h, n, d, dtype=torch.float32, seed=0)) + 1
    k = F.elu(make(b, h, n, d, dtype=torch.float32, seed=1)) + 1
    v = make(b, h, n, dv, dtype=torch.float32, seed=2)
    with torch.no_grad():
        out = linear_attention(q.to(dtype), k.to(dtype), v.to(dtype), causal=causal)
    assert kernels.last_path("linear_attention") == "triton"
    assert rel_err(out, linear_attention_reference(q, k, v, causal=causal)) < TOL[dtype]


def test_gpu_dispatch_falls_back_where_kernels_do_not_apply():
    q = make(1, 1, 64, 320, dtype=torch.float16, seed=0, grad=True)
    attention(q, q, q)  # backward needs D <= 256
    assert kernels.last_path("attention") == "sdpa"
    linear_attention(q.abs(), q.abs(), q)  # linear kernels are forward-only
    assert kernels.last_path("linear_attention") == "torch_matmul"
