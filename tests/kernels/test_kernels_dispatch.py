"""The dispatch rules and the one-time self-check of each op's paths, on CPU.

On CUDA every path is self-checked the first time it runs (``kernels.dispatch.SELF_CHECK``); here
the same machinery is switched on for CPU paths and fed deliberately broken ones.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import kernels
from kernels.dispatch import (
    OPS,
    SELF_CHECK,
    VERIFIED_TRITON,
    Op,
    register,
    reset_self_checks,
    self_check,
    triton_is_default,
)
from kernels.registry import UnknownName

CPU = torch.device("cpu")
PATHS = [(name, path) for name, op in OPS.items() for path in op.paths if path != "reference"]


@pytest.fixture(autouse=True)
def fresh_verdicts():
    reset_self_checks()
    yield
    reset_self_checks()


def check_on_cpu(monkeypatch, *paths):
    for path in paths:
        monkeypatch.setitem(SELF_CHECK, path, frozenset({"cpu"}))


def spy(monkeypatch, op, path, transform=None):
    """Replace ``op``'s ``path`` by a wrapper that counts its calls (and alters its output)."""
    real, calls = OPS[op].paths[path], []

    def wrapped(*args, **kwargs):
        calls.append(kwargs)
        out = real(*args, **kwargs)
        return transform(out) if transform else out

    monkeypatch.setitem(OPS[op].paths, path, wrapped)
    return calls


def qkv(n=20, d=8, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(1, 2, n, d, generator=g).to(dtype) for _ in range(3))


def test_ops_are_one_registry_and_an_op_name_is_registered_once():
    assert OPS.names() == ["attention", "fft_conv", "linear_attention", "local_attention", "neighborhood_attention"]
    attention = OPS["attention"]
    with pytest.raises(ValueError, match="kernel op 'attention' is registered twice"):
        register(Op("attention", paths={"reference": kernels.attention_reference}, probes=lambda *a: []))
    assert OPS["attention"] is attention and attention.paths["reference"] is kernels.attention_reference
    with pytest.raises(UnknownName, match="unknown kernel op 'flash'; known: attention, fft_conv"):
        OPS.get("flash")


@pytest.mark.parametrize("name,path", PATHS, ids=[f"{n}-{p}" for n, p in PATHS])
def test_every_path_passes_its_own_self_check(name, path):
    if path == "triton":
        pytest.importorskip("triton")  # runs under TRITON_INTERPRET=1 (tests/conftest.py), fp32 only
    dtypes = [torch.float32] if path == "triton" else [torch.float32, torch.float16]
    for dtype in dtypes:
        assert self_check(OPS[name], path, CPU, dtype) is None


def test_a_broken_path_warns_once_and_falls_back_to_the_reference(monkeypatch):
    check_on_cpu(monkeypatch, "sdpa")
    calls = spy(monkeypatch, "attention", "sdpa", transform=lambda out: out * 1.5)
    q, k, v = qkv()
    with pytest.warns(RuntimeWarning, match=r"attention: path 'sdpa' failed its self-check on cpu "
                                            r"torch.float32: relative error .* using 'reference'"):
        out = kernels.attention(q, k, v, causal=True)
    assert kernels.last_path("attention") == "reference"
    torch.testing.assert_close(out, kernels.attention_reference(q, k, v, causal=True))
    checked = len(calls)
    assert checked >= 1  # the probes ran through the broken path
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kernels.attention(q, k, v)  # decided once: no second check, no second warning
    assert len(calls) == checked and kernels.last_path("attention") == "reference"


def test_a_passing_path_is_checked_once_per_dtype(monkeypatch):
    check_on_cpu(monkeypatch, "sdpa")
    calls = spy(monkeypatch, "attention", "sdpa")
    n_probes = len(OPS["attention"].probes("sdpa", CPU, torch.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kernels.attention(*qkv())
        assert len(calls) == n_probes + 1 and kernels.last_path("attention") == "sdpa"
        kernels.attention(*qkv(seed=1))
        assert len(calls) == n_probes + 2
        kernels.attention(*qkv(dtype=torch.float64))  # a new dtype is checked again
        assert len(calls) == 2 * n_probes + 3


def test_a_forced_backend_is_not_checked(monkeypatch):
    check_on_cpu(monkeypatch, "sdpa")
    calls = spy(monkeypatch, "attention", "sdpa", transform=lambda out: out * 1.5)
    q, k, v = qkv()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = kernels.attention(q, k, v, backend="torch")
    assert len(calls) == 1 and kernels.last_path("attention") == "sdpa"
    torch.testing.assert_close(out, 1.5 * kernels.attention_reference(q, k, v))


def test_fallback_takes_the_next_path_that_passes(monkeypatch):
    check_on_cpu(monkeypatch, "sdpa_masked", "torch_banded")
    spy(monkeypatch, "local_attention", "sdpa_masked", transform=torch.zeros_like)
    q, k, v = qkv(n=16)  # small: the size rule picks masked SDPA first
    with pytest.warns(RuntimeWarning, match="'sdpa_masked' failed .* using 'torch_banded'"):
        out = kernels.local_attention(q, k, v, window=3)
    assert kernels.last_path("local_attention") == "torch_banded"
    torch.testing.assert_close(out, kernels.local_attention_reference(q, k, v, window=3))


def test_a_path_that_raises_fails_its_check_and_gradients_flow_through_the_fallback(monkeypatch):
    check_on_cpu(monkeypatch, "torch_matmul")

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel image is available")

    monkeypatch.setitem(OPS["linear_attention"].paths, "torch_matmul", broken)
    q, k, v = (t.abs().requires_grad_() for t in qkv())
    with pytest.warns(RuntimeWarning, match="raised RuntimeError: no kernel image"):
        out = kernels.linear_attention(q, k, v)
    assert kernels.last_path("linear_attention") == "reference"
    out.sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))


def test_no_check_where_self_check_is_off(monkeypatch):
    calls = spy(monkeypatch, "fft_conv", "torch.fft")
    assert "cpu" not in SELF_CHECK["torch.fft"]
    kernels.fft_conv(torch.randn(1, 2, 8), torch.randn(2, 8))
    assert len(calls) == 1 and kernels.last_path("fft_conv") == "torch.fft"


def test_conv1d_fallback_matches_the_reference(monkeypatch):
    check_on_cpu(monkeypatch, "torch.fft", "conv1d")
    spy(monkeypatch, "fft_conv", "torch.fft", transform=lambda y: y + 1)
    u, h = torch.randn(2, 3, 10), torch.randn(3, 19)
    with pytest.warns(RuntimeWarning, match="'torch.fft' failed"):
        out = kernels.fft_conv(u, h, causal=False)
    assert kernels.last_path("fft_conv") == "conv1d"
    torch.testing.assert_close(out, kernels.fft_conv_reference(u, h, causal=False), rtol=1e-4, atol=1e-5)


def test_triton_is_default_only_where_verified(monkeypatch):
    assert not triton_is_default("attention", "cuda:sm90")
    monkeypatch.setitem(VERIFIED_TRITON, "attention", frozenset({"cuda:sm90"}))
    assert triton_is_default("attention", "cuda:sm90")
    assert not triton_is_default("attention", "cuda:sm80") and not triton_is_default("linear_attention", "cuda:sm90")


def test_no_triton_kernel_is_a_default_yet():
    """No GPU has run tests/kernels/test_kernels_gpu.py and benchmarks/kernel_speed.py (benchmarks/gpu_check.sh):
    until one has, and benchmarks/README.md records it, no kernel may be a default."""
    assert VERIFIED_TRITON == {}
