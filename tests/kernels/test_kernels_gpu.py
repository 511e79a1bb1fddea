"""The kernel comparisons at real sizes on a CUDA device (marked ``gpu``; skipped without CUDA).

Run with ``pytest -m gpu tests/kernels/test_kernels_gpu.py`` on a machine with a GPU, or all GPU checks at
once with ``benchmarks/gpu_check.sh``. References run in fp32 on the same device; fp32 kernels use
TF32 tensor-core dots, hence the looser fp32 bound. Each comparison runs twice: the Triton kernel
(``backend="triton"``) and the default path (``backend=None``: PyTorch until a kernel is listed in
``kernels.dispatch.VERIFIED_TRITON``), whose one-time self-check must pass (no warning).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels import (
    attention,
    attention_reference,
    fft_conv,
    fft_conv_reference,
    linear_attention,
    linear_attention_reference,
    local_attention,
    local_attention_reference,
)
from kernels.dispatch import VERIFIED_TRITON, device_kind

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TOL = {torch.float32: 5e-3, torch.float16: 5e-3, torch.bfloat16: 2e-2}
BACKEND_ARGS = ["triton", None]  # forced kernels, then the default path


@pytest.fixture(autouse=True)
def self_checks_must_pass():
    """A default path whose self-check fails warns and falls back: here that is a failure."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*failed its self-check", category=RuntimeWarning)
        yield


def expected_path(op: str, backend, torch_path: str) -> str:
    if backend == "triton" or op in VERIFIED_TRITON and device_kind(torch.device("cuda")) in VERIFIED_TRITON[op]:
        return "triton"
    return torch_path


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


@pytest.mark.parametrize("backend", BACKEND_ARGS, ids=["triton", "default"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("case", ATTN, ids=[_id(c) for c in ATTN])
def test_attention_gpu(case, dtype, backend):
    b, h, hk, n, m, d, dv, causal, bwd = case
    q, k, v = make(b, h, n, d, dtype=dtype, seed=0, grad=bwd), make(b, hk, m, d, dtype=dtype, seed=1, grad=bwd), \
        make(b, hk, m, dv, dtype=dtype, seed=2, grad=bwd)
    compare(lambda *t: attention(*t, causal=causal, backend=backend), lambda *t: attention_reference(*t, causal=causal),
            q, k, v, bwd=bwd, tol=TOL[dtype])
    assert kernels.last_path("attention") == expected_path("attention", backend, "sdpa")


LOCAL = [(4096, 64, 255, 1, False), (4096, 64, 128, 1, True), (4095, 128, 63, 4, False), (2048, 64, 31, 3, True)]


@pytest.mark.parametrize("backend", BACKEND_ARGS, ids=["triton", "default"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("case", LOCAL, ids=[f"N{n}-D{d}-w{w}-dil{dl}-{'causal' if c else 'full'}" for n, d, w, dl, c in LOCAL])
def test_local_attention_gpu(case, dtype, backend):
    n, d, w, dil, causal = case
    q, k, v = (make(1, 4, n, d, dtype=dtype, seed=s, grad=True) for s in range(3))
    compare(lambda *t: local_attention(*t, window=w, dilation=dil, causal=causal, backend=backend),
            lambda *t: local_attention_reference(*t, window=w, dilation=dil, causal=causal),
            q, k, v, bwd=True, tol=TOL[dtype])
    assert kernels.last_path("local_attention") == expected_path("local_attention", backend, "torch_banded")


LINEAR = [(2, 8, 4096, 64, 64, False), (2, 8, 4096, 64, 64, True), (1, 4, 2047, 128, 96, True), (1, 4, 3000, 256, 128, False)]


@pytest.mark.parametrize("backend", BACKEND_ARGS, ids=["triton", "default"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("case", LINEAR, ids=[f"B{b}-H{h}-N{n}-D{d}-Dv{dv}-{'causal' if c else 'full'}" for b, h, n, d, dv, c in LINEAR])
def test_linear_attention_gpu(case, dtype, backend):
    b, h, n, d, dv, causal = case
    if backend == "triton" and causal and d > 128:
        pytest.skip("the causal Triton kernel takes D <= 128")
    q = F.elu(make(b, h, n, d, dtype=torch.float32, seed=0)) + 1
    k = F.elu(make(b, h, n, d, dtype=torch.float32, seed=1)) + 1
    v = make(b, h, n, dv, dtype=torch.float32, seed=2)
    with torch.no_grad():
        out = linear_attention(q.to(dtype), k.to(dtype), v.to(dtype), causal=causal, backend=backend)
    torch_path = "torch_chunked" if causal else "torch_matmul"
    assert kernels.last_path("linear_attention") == expected_path("linear_attention", backend, torch_path)
    assert rel_err(out, linear_attention_reference(q, k, v, causal=causal)) < TOL[dtype]


def test_forcing_triton_where_the_kernels_do_not_apply_is_an_error():
    q = make(1, 1, 64, 320, dtype=torch.float16, seed=0, grad=True)
    with pytest.raises(ValueError, match="backward supports head dims"):
        attention(q, q, q, backend="triton")  # backward needs D <= 256
    with pytest.raises(ValueError, match="forward-only"):
        linear_attention(q.abs(), q.abs(), q, backend="triton")
    attention(q, q, q)
    assert kernels.last_path("attention") == "sdpa"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_fft_conv_gpu(causal, dtype):
    u, h = make(1, 4, 96, dtype=dtype, seed=0), make(4, 96 if causal else 191, dtype=dtype, seed=1) / 10
    out = fft_conv(u, h, causal=causal)
    assert kernels.last_path("fft_conv") == "torch.fft"
    assert rel_err(out, fft_conv_reference(u.float(), h.float(), causal=causal)) < TOL[dtype]
    n = 4096  # long: against a direct convolution in fp64 on the device (the reference loops in Python)
    u, h = make(2, 64, n, dtype=dtype, seed=2), make(64, n if causal else 2 * n - 1, dtype=dtype, seed=3) / 60
    want = F.conv1d(F.pad(u.double(), (n - 1, 0) if causal else (n - 1, n - 1)), h.double().flip(-1).unsqueeze(1),
                    groups=64)
    assert rel_err(fft_conv(u, h, causal=causal), want) < TOL[dtype]
