"""Triton softmax and sliding-window attention against their PyTorch references, and dispatch.

On CPU the kernels run through Triton's interpreter (``tests/conftest.py`` sets
``TRITON_INTERPRET=1``), so shapes are tiny and odd on purpose (7, 20, 33: partial tiles).
The same comparisons at real sizes live in ``tests/kernels/test_kernels_gpu.py`` (marked ``gpu``).
"""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import attention, attention_reference, local_attention, local_attention_reference

pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter grid; GPU grid in test_kernels_gpu.py")

DEV = "cpu"
TOL = {torch.float32: 1e-5, torch.float16: 5e-3}


def rel_err(a: torch.Tensor, b: torch.Tensor, floor: float = 1e-12) -> float:
    """||a - b|| / max(||b||, floor) in fp32 (both must be finite)."""
    a, b = a.float(), b.float()
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    return ((a - b).norm() / b.norm().clamp_min(floor)).item()


def make(b, h, n, d, *, dtype=torch.float32, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h, n, d, generator=g).to(dtype).requires_grad_(grad)


def check_fwd_bwd(fn, ref, q, k, v, *, bwd: bool, tol: float):
    out = fn(q, k, v)
    want = ref(*(t.float() for t in (q, k, v)))  # reference in fp32
    assert out.shape == want.shape and out.dtype == q.dtype
    assert rel_err(out, want) < tol, f"forward rel err {rel_err(out, want):.2e}"
    if not bwd:
        return
    do = make(*out.shape, seed=7, dtype=out.dtype)
    got = torch.autograd.grad(out, (q, k, v), do)
    qf, kf, vf = (t.detach().float().requires_grad_() for t in (q, k, v))
    exp = torch.autograd.grad(ref(qf, kf, vf), (qf, kf, vf), do.float())
    for name, a, b in zip("qkv", got, exp):
        assert a.shape == b.shape
        err = rel_err(a, b, floor=1.0)  # floor: a gradient can be exactly 0 (window of one key)
        assert err < tol * 4, f"d{name} rel err {err:.2e}"


# (B, Hq, Hkv, N, M, D, Dv, causal, backward)
ATTN = [
    (1, 2, 2, 33, 33, 16, 16, False, True),
    (1, 2, 2, 33, 33, 16, 16, True, True),
    (1, 4, 2, 33, 33, 64, 64, True, True),    # GQA
    (2, 4, 1, 7, 7, 64, 64, False, True),     # MQA
    (1, 2, 1, 7, 20, 32, 48, True, True),     # cross lengths, causal bottom-right, Dv != D
    (1, 2, 2, 20, 33, 16, 16, False, True),
    # backward above D = 128: the whole head padded to one 256-wide tile
    (1, 2, 2, 20, 20, 160, 160, False, True),
    (1, 4, 2, 19, 19, 160, 160, True, True),   # GQA, odd length
    (1, 2, 1, 7, 20, 256, 256, True, True),    # MQA, cross lengths, causal bottom-right
    (1, 1, 1, 33, 33, 256, 192, False, True),  # Dv != D
    (1, 1, 1, 7, 7, 512, 512, False, False),  # single head, 4 D chunks x 4 Dv blocks
    (1, 1, 1, 20, 20, 512, 512, True, False),
    (1, 1, 1, 9, 9, 320, 192, True, False),   # ragged last D chunk, 2 Dv blocks
]


def _attn_id(c):
    b, h, hk, n, m, d, dv, causal, bwd = c
    return f"B{b}-H{h}-kv{hk}-N{n}-M{m}-D{d}-Dv{dv}-{'causal' if causal else 'full'}{'-bwd' if bwd else ''}"


@pytest.mark.parametrize("case", ATTN, ids=[_attn_id(c) for c in ATTN])
def test_attention_fp32(case):
    b, h, hk, n, m, d, dv, causal, bwd = case
    q, k, v = make(b, h, n, d, grad=bwd), make(b, hk, m, d, seed=1, grad=bwd), make(b, hk, m, dv, seed=2, grad=bwd)
    check_fwd_bwd(lambda *t: attention(*t, causal=causal, backend="triton"),
                  lambda *t: attention_reference(*t, causal=causal), q, k, v, bwd=bwd, tol=TOL[torch.float32])
    assert kernels.last_path("attention") == "triton"


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_attention_fp16_gqa(causal):
    q, k, v = make(1, 4, 33, 64, dtype=torch.float16, grad=True), make(1, 2, 33, 64, seed=1, dtype=torch.float16,
                                                                      grad=True), make(1, 2, 33, 64, seed=2, dtype=torch.float16, grad=True)
    check_fwd_bwd(lambda *t: attention(*t, causal=causal, backend="triton"),
                  lambda *t: attention_reference(*t, causal=causal), q, k, v, bwd=causal, tol=TOL[torch.float16])


def test_attention_scale_and_strided_inputs():
    """Custom scale; q/k/v as non-contiguous views of one packed projection, as mixers pass them."""
    qkv = make(1, 3 * 2, 20, 32).view(1, 20, 3, 2, 32).permute(2, 0, 3, 1, 4)  # (3, B, H, N, D) strided
    q, k, v = qkv.unbind(0)
    out = attention(q, k, v, scale=0.3, backend="triton")
    assert rel_err(out, attention_reference(q, k, v, scale=0.3)) < TOL[torch.float32]


def test_attention_causal_rows_without_keys_are_zero():
    """Bottom-right causal with N > M: the first N - M queries see no key; the kernel returns 0."""
    q, k, v = make(1, 1, 9, 16), make(1, 1, 5, 16, seed=1), make(1, 1, 5, 16, seed=2)
    out = attention(q, k, v, causal=True, backend="triton")
    assert torch.equal(out[:, :, :4], torch.zeros_like(out[:, :, :4]))
    assert rel_err(out[:, :, 4:], attention_reference(q, k, v, causal=True)[:, :, 4:]) < TOL[torch.float32]


# (N, D, window, dilation, causal)
LOCAL = [
    (33, 16, 5, 1, False),
    (33, 16, 3, 2, True),
    (33, 16, 5, 3, False),
    (7, 16, 9, 1, True),     # window wider than the sequence
    (33, 32, 4, 1, False),   # even window: +-2
    (20, 16, 1, 1, True),    # only itself
    (33, 64, 7, 4, True),
    (20, 256, 3, 2, True),   # wide head, backward included
]


@pytest.mark.parametrize("case", LOCAL, ids=[f"N{n}-D{d}-w{w}-dil{dl}-{'causal' if c else 'full'}" for n, d, w, dl, c in LOCAL])
def test_local_attention_fp32(case):
    n, d, w, dil, causal = case
    q, k, v = (make(1, 2, n, d, seed=s, grad=True) for s in range(3))
    check_fwd_bwd(lambda *t: local_attention(*t, window=w, dilation=dil, causal=causal, backend="triton"),
                  lambda *t: local_attention_reference(*t, window=w, dilation=dil, causal=causal),
                  q, k, v, bwd=True, tol=TOL[torch.float32])
    assert kernels.last_path("local_attention") == "triton"


def test_local_attention_fp16():
    q, k, v = (make(1, 2, 33, 64, seed=s, dtype=torch.float16) for s in range(3))
    check_fwd_bwd(lambda *t: local_attention(*t, window=5, dilation=2, backend="triton"),
                  lambda *t: local_attention_reference(*t, window=5, dilation=2), q, k, v, bwd=False,
                  tol=TOL[torch.float16])


# ---- dispatch -------------------------------------------------------------------------------

def test_interpreter_is_in_effect():
    """Without CUDA, conftest must have made triton.jit build interpreted kernels."""
    from triton.runtime.interpreter import InterpretedFunction

    from kernels import triton_attention, triton_linear

    kernels = triton_attention.KERNELS + triton_linear.KERNELS
    assert len(kernels) == 6 and all(isinstance(k, InterpretedFunction) for k in kernels)


def test_cpu_default_takes_pytorch_paths():
    q, k, v = (make(1, 2, 16, 16, seed=s) for s in range(3))
    attention(q, k, v, causal=True)
    assert kernels.last_path("attention") == "sdpa"
    local_attention(q, k, v, window=3)
    assert kernels.last_path("local_attention") == "sdpa_masked"
    kernels.linear_attention(q.abs(), k.abs(), v, causal=True)
    assert kernels.last_path("linear_attention") == "torch_chunked"
    kernels.linear_attention(q.abs(), k.abs(), v)
    assert kernels.last_path("linear_attention") == "torch_matmul"
    kernels.fft_conv(torch.randn(1, 2, 16), torch.randn(2, 16))  # u (B, C, N), h (C, L)
    assert kernels.last_path("fft_conv") == "torch.fft"


def test_torch_causal_cross_lengths_match_reference():
    """SDPA's is_causal is top-left aligned; the public op keeps the reference's bottom-right rule."""
    q, k, v = make(1, 2, 5, 16), make(1, 2, 9, 16, seed=1), make(1, 2, 9, 16, seed=2)
    out = attention(q, k, v, causal=True, backend="torch")
    assert rel_err(out, attention_reference(q, k, v, causal=True)) < TOL[torch.float32]


BAD = {
    "attention-3d": lambda: attention(torch.zeros(2, 4, 8), torch.zeros(2, 4, 8), torch.zeros(2, 4, 8)),
    "attention-heads": lambda: attention(make(1, 3, 4, 8), make(1, 2, 4, 8), make(1, 2, 4, 8)),
    "attention-dim": lambda: attention(make(1, 2, 4, 8), make(1, 2, 4, 16), make(1, 2, 4, 8)),
    "attention-backend": lambda: attention(make(1, 2, 4, 8), make(1, 2, 4, 8), make(1, 2, 4, 8), backend="cuda"),
    "attention-triton-headdim": lambda: attention(make(1, 1, 4, 1024), make(1, 1, 4, 1024), make(1, 1, 4, 8),
                                                  backend="triton"),
    "attention-triton-dtypes": lambda: attention(make(1, 1, 4, 16), make(1, 1, 4, 16, dtype=torch.float16),
                                                 make(1, 1, 4, 16), backend="triton"),
    "local-shape": lambda: local_attention(make(1, 2, 4, 8), make(1, 2, 5, 8), make(1, 2, 4, 8), window=3),
    "local-window": lambda: local_attention(make(1, 2, 4, 8), make(1, 2, 4, 8), make(1, 2, 4, 8), window=0,
                                            backend="triton"),
    "local-dilation": lambda: local_attention(make(1, 2, 4, 8), make(1, 2, 4, 8), make(1, 2, 4, 8), window=3,
                                              dilation=0),
    "linear-shape": lambda: kernels.linear_attention(make(1, 2, 4, 8), make(1, 2, 4, 4), make(1, 2, 4, 8)),
    "linear-triton-grad": lambda: kernels.linear_attention(make(1, 2, 4, 8, grad=True), make(1, 2, 4, 8),
                                                           make(1, 2, 4, 8), backend="triton"),
    "fft-shape": lambda: kernels.fft_conv(torch.zeros(2, 3, 8), torch.zeros(4, 8)),
}


@pytest.mark.parametrize("call", list(BAD.values()), ids=list(BAD))
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize("d, dv, backward", [(128, 128, True), (256, 256, True), (160, 96, True), (320, 64, False),
                                              (64, 320, False)])
def test_triton_backward_takes_head_dims_up_to_256(d, dv, backward):
    """What dispatch asks the kernel on CUDA: with gradients, head dims up to 256 (forward: 512)."""
    from kernels import triton_attention

    q, v = make(1, 1, 8, d, grad=True), make(1, 1, 8, dv, seed=2, grad=True)
    assert (triton_attention.supports(q, q, v, needs_grad=True) is None) == backward
    assert triton_attention.supports(q, q, v, needs_grad=False) is None


def test_attention_backward_beyond_256_stays_on_pytorch():
    """Gradients with D > 256 are not in the Triton backward: forcing the kernel is refused, the
    default path is PyTorch's."""
    q, k, v = (make(1, 1, 8, 320, seed=s, grad=True) for s in range(3))
    with pytest.raises(ValueError, match="backward supports head dims <= 256"):
        attention(q, k, v, backend="triton")
    out = attention(q, k, v)
    assert kernels.last_path("attention") == "sdpa"
    out.sum().backward()
    assert q.grad is not None
