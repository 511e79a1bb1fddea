"""Defining properties of the linear, local, hilo, fnet, glu, conv and hyena2d mixers, each
checked against a naive implementation written here."""

import math

import pytest
import torch
import torch.nn.functional as F

import kernels
from search_spaces import get_mixer
from search_spaces.mixers.hyena2d import fft_conv2d

DIM = 8


def _x(n, seed=0, b=2, dim=DIM):
    return torch.randn(b, n, dim, generator=torch.Generator().manual_seed(seed))


def _mixer(name, causal=False, seed=0, **params):
    torch.manual_seed(seed)
    return get_mixer(name)(DIM, causal=causal, **params).eval()


def _dependency(m, x, hw=None, tol=1e-6):
    """(N, N) bool: out[i] changes when input token j is perturbed (batch 1)."""
    n = x.shape[1]
    dep = torch.zeros(n, n, dtype=torch.bool)
    with torch.no_grad():
        y = m(x, hw=hw)
        for j in range(n):
            x2 = x.clone()
            x2[:, j] += torch.randn(x.shape[-1], generator=torch.Generator().manual_seed(100 + j))
            dep[:, j] = (m(x2, hw=hw) - y).abs().amax(dim=(0, 2)) > tol
    return dep


def _qkv(m, x):
    B, N, C = x.shape
    h = m.heads
    return m.qkv(x).view(B, N, 3, h, C // h).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, N, hd)


# ---------------------------------------------------------------- linear
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("cosformer", [False, True], ids=["plain", "cosformer"])
@pytest.mark.parametrize("feature", ["elu", "relu"])
def test_linear_equals_quadratic_form(causal, cosformer, feature):
    m = _mixer("linear", causal, heads=2, cosformer=cosformer, feature=feature)
    x = _x(11)
    N = x.shape[1]
    q, k, v = _qkv(m, x)
    phi = (lambda t: F.elu(t) + 1) if feature == "elu" else F.relu
    a = phi(q) @ phi(k).transpose(-2, -1)  # (B, h, N, N)
    if cosformer:
        i = torch.arange(N, dtype=torch.float32)
        a = a * torch.cos(math.pi / 2 * (i[:, None] - i[None, :]) / N)
    if causal:
        a = a.tril()
    y = (a @ v) / (a.sum(-1, keepdim=True) + 1e-6)
    ref = m.proj(y.transpose(1, 2).reshape(x.shape))
    with torch.no_grad():
        out = m(x)
    torch.testing.assert_close(out, ref.detach(), atol=1e-5, rtol=1e-4)


def test_linear_cosformer_reweighting_changes_output():
    x = _x(12)
    with torch.no_grad():
        a = _mixer("linear", cosformer=False)(x)
        b = _mixer("linear", cosformer=True)(x)
    assert not torch.allclose(a, b, atol=1e-4)


# ---------------------------------------------------------------- local
def _window_1d(n, window, dilation, causal):
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    ok = torch.zeros(n, n, dtype=torch.bool)
    ts = range(-(window - 1), 1) if causal else range(-(window // 2), window // 2 + 1)
    for t in ts:
        ok |= j == i + dilation * t
    return ok


@pytest.mark.parametrize("window,dilation,causal", [(3, 1, False), (3, 2, False), (5, 3, False), (3, 2, True)],
                         ids=["w3", "w3-d2", "w5-d3", "w3-d2-causal"])
def test_local_1d_attends_exactly_its_window(window, dilation, causal):
    m = _mixer("local", causal, heads=2, window=window, dilation=dilation)
    x = _x(13, b=1)
    assert torch.equal(_dependency(m, x), _window_1d(13, window, dilation, causal))


@pytest.mark.parametrize("window,dilation", [(3, 1), (3, 2)], ids=["w3", "w3-d2"])
def test_local_2d_neighborhood(window, dilation):
    H, W = 5, 6
    m = _mixer("local", heads=2, window=window, dilation=dilation)
    x = _x(H * W, b=1)
    rows, cols = _window_1d(H, window, dilation, False), _window_1d(W, window, dilation, False)
    expected = (rows[:, None, :, None] & cols[None, :, None, :]).reshape(H * W, H * W)
    assert torch.equal(_dependency(m, x, hw=(H, W)), expected)
    # values: each query's softmax over exactly its neighbours, computed one query at a time
    q, k, v = _qkv(m, x)
    ys = []
    for i in range(H * W):
        nb = expected[i].nonzero().squeeze(1)
        s = (q[:, :, i : i + 1] @ k[:, :, nb].transpose(-2, -1)) / math.sqrt(q.shape[-1])
        ys.append(torch.softmax(s, -1) @ v[:, :, nb])
    ref = m.proj(torch.cat(ys, dim=2).transpose(1, 2).reshape(x.shape))
    with torch.no_grad():
        torch.testing.assert_close(m(x, hw=(H, W)), ref.detach(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("hw,causal", [((16, 16), False), (None, True)], ids=["2d-16x16", "1d-causal-N256"])
def test_local_banded_path_matches_masked_attention(hw, causal):
    """At 256 tokens the mixer takes the banded path (no N x N mask) and gives what masked SDPA gives."""
    n, window, dilation = 256, 3, 2
    m = _mixer("local", causal, heads=2, window=window, dilation=dilation)
    x = _x(n, b=1)
    if hw is None:
        mask = _window_1d(n, window, dilation, causal)
    else:
        rows, cols = _window_1d(hw[0], window, dilation, False), _window_1d(hw[1], window, dilation, False)
        mask = (rows[:, None, :, None] & cols[None, :, None, :]).reshape(n, n)
    q, k, v = _qkv(m, x)
    ref = m.proj(F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(x.shape))
    with torch.no_grad():
        out = m(x, hw=hw)
    assert kernels.last_path("local_attention" if hw is None else "neighborhood_attention") == "torch_banded"
    torch.testing.assert_close(out, ref.detach(), atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- hilo
def _naive_windows(hw, window):
    """Token index lists of the non-overlapping windows (partial at the far borders)."""
    H, W = hw
    wh = window if H > 1 else 1
    return [[r * W + c for r in range(r0, min(r0 + wh, H)) for c in range(c0, min(c0 + window, W))]
            for r0 in range(0, H, wh) for c0 in range(0, W, window)]


def _attend(q, k, v):
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1) @ v


@pytest.mark.parametrize("hw,n", [((4, 6), 24), ((5, 5), 25), (None, 10)], ids=["grid", "grid-partial", "1d"])
def test_hilo_alpha0_is_window_attention(hw, n):
    m = _mixer("hilo", heads=2, alpha=0.0, window=2 if hw else 4)
    assert m.l_heads == 0 and not hasattr(m, "l_q")
    x = _x(n)
    B, N, C = x.shape
    qkv = m.h_qkv(x).view(B, N, 3, 2, C // 2).permute(2, 0, 3, 1, 4)  # (3, B, h, N, hd)
    y = torch.zeros(B, 2, N, C // 2)
    for idx in _naive_windows(hw or (1, n), m.window):
        y[:, :, idx] = _attend(qkv[0][:, :, idx], qkv[1][:, :, idx], qkv[2][:, :, idx])
    ref = m.h_proj(y.transpose(1, 2).reshape(B, N, C))
    with torch.no_grad():
        torch.testing.assert_close(m(x, hw=hw), ref.detach(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("hw,n", [((4, 6), 24), ((5, 5), 25), (None, 10)], ids=["grid", "grid-partial", "1d"])
def test_hilo_alpha1_is_pooled_global_attention(hw, n):
    m = _mixer("hilo", heads=2, alpha=1.0, window=2 if hw else 4)
    assert m.h_heads == 0 and not hasattr(m, "h_qkv")
    x = _x(n)
    B, N, C = x.shape
    pooled = torch.stack([x[:, idx].mean(1) for idx in _naive_windows(hw or (1, n), m.window)], dim=1)  # (B, M, C)
    q = m.l_q(x).view(B, N, 2, C // 2).transpose(1, 2)
    kv = m.l_kv(pooled).view(B, -1, 2, 2, C // 2).permute(2, 0, 3, 1, 4)
    ref = m.l_proj(_attend(q, kv[0], kv[1]).transpose(1, 2).reshape(B, N, C))
    with torch.no_grad():
        torch.testing.assert_close(m(x, hw=hw), ref.detach(), atol=1e-5, rtol=1e-4)


def test_hilo_splits_heads_by_alpha():
    m = _mixer("hilo", heads=4, alpha=0.75)
    assert (m.h_heads, m.l_heads) == (1, 3)
    x = _x(16)
    with torch.no_grad():
        y = m(x, hw=(4, 4))
        torch.testing.assert_close(y[..., : m.h_dim], m.hifi(x, (4, 4)))
        torch.testing.assert_close(y[..., m.h_dim :], m.lofi(x, (4, 4)))


# ---------------------------------------------------------------- fnet
def _dft(n):
    k = torch.arange(n, dtype=torch.float64)
    return torch.exp(-2j * math.pi * k[:, None] * k[None, :] / n)  # (n, n) complex


@pytest.mark.parametrize("norm", ["ortho", "backward"])
def test_fnet_is_real_part_of_2d_dft(norm):
    x = _x(10).double()
    N, C = x.shape[1:]
    scale = 1 / math.sqrt(N * C) if norm == "ortho" else 1.0
    ref = (_dft(N) @ x.to(torch.complex128) @ _dft(C)).real * scale  # DFT over tokens and channels
    torch.testing.assert_close(_mixer("fnet", norm=norm)(x), ref)


def test_fnet_on_grid_transforms_both_grid_axes():
    H, W = 3, 4
    x = _x(H * W).double()
    C = x.shape[-1]
    tokens = torch.kron(_dft(H), _dft(W))  # 2-D DFT on the row-major grid
    ref = (tokens @ x.to(torch.complex128) @ _dft(C)).real / math.sqrt(H * W * C)
    torch.testing.assert_close(_mixer("fnet")(x, hw=(H, W)), ref)


# ---------------------------------------------------------------- glu
def test_glu_is_tokenwise():
    m = _mixer("glu", causal=True)
    x = _x(9, b=1)
    assert torch.equal(_dependency(m, x), torch.eye(9, dtype=torch.bool))
    with torch.no_grad():
        torch.testing.assert_close(m(x)[:, 4:5], m(x[:, 4:5]))
        g, v = m.fc_in(x).chunk(2, -1)
        torch.testing.assert_close(m(x), m.fc_out(F.gelu(g) * v))


# ---------------------------------------------------------------- conv
@pytest.mark.parametrize("causal", [False, True], ids=["same", "causal"])
def test_conv_1d_equals_direct_convolution(causal):
    k = 5
    m = _mixer("conv", causal, kernel_size=k)
    x = _x(11)
    w, b = m.conv.weight[:, 0], m.conv.bias  # (C, k), (C,)
    offs = range(-(k - 1), 1) if causal else range(-(k // 2), k // 2 + 1)  # tap t reads x[n + off_t]
    ref = b.expand_as(x).clone()
    for n in range(x.shape[1]):
        for t, off in enumerate(offs):
            if 0 <= n + off < x.shape[1]:
                ref[:, n] += w[:, t] * x[:, n + off]
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref.detach(), atol=1e-5, rtol=1e-4)
    dep = _dependency(m, x[:1])
    i, j = torch.arange(11)[:, None], torch.arange(11)[None, :]
    assert torch.equal(dep, (j <= i) & (j > i - k) if causal else (j - i).abs() <= k // 2)


def test_conv_2d_equals_direct_convolution():
    k, H, W = 3, 4, 5
    m = _mixer("conv", kernel_size=k, grid=True)
    x = _x(H * W)
    g = x.transpose(1, 2).reshape(2, DIM, H, W)
    ref = m.conv.bias[None, :, None, None].expand(2, DIM, H, W).clone()
    for r in range(H):
        for c in range(W):
            for a in range(k):
                for b in range(k):
                    rr, cc = r + a - k // 2, c + b - k // 2
                    if 0 <= rr < H and 0 <= cc < W:
                        ref[:, :, r, c] += m.conv.weight[:, 0, a, b] * g[:, :, rr, cc]
    with torch.no_grad():
        torch.testing.assert_close(m(x, hw=(H, W)), ref.flatten(2).transpose(1, 2).detach(), atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- hyena2d
def test_fft_conv2d_is_linear_not_circular():
    H, W, C = 3, 4, 2
    u = torch.randn(1, C, H, W, dtype=torch.float64)
    h = torch.randn(C, 2 * H - 1, 2 * W - 1, dtype=torch.float64)
    ref = torch.zeros_like(u)
    for i in range(H):
        for j in range(W):
            for a in range(H):
                for b in range(W):
                    ref[0, :, i, j] += h[:, i - a + H - 1, j - b + W - 1] * u[0, :, a, b]
    torch.testing.assert_close(fft_conv2d(u, h), ref)


def test_hyena2d_shape_and_global_receptive_field():
    H, W = 3, 5
    m = _mixer("hyena2d")
    x = _x(H * W, b=1)
    with torch.no_grad():
        assert m(x, hw=(H, W)).shape == x.shape
    dep = _dependency(m, x, hw=(H, W), tol=1e-7)
    assert dep.all(), f"{int((~dep).sum())} output/input pairs do not interact"  # corners included
    with pytest.raises(ValueError, match="hw"):
        m(x)
