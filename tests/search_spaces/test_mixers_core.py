"""Defining properties of the first mixers (softmax, hyena, gfnet) and the FFN choices."""

import math

import pytest
import torch

from search_spaces import get_mixer
from search_spaces.ffn import build_ffn


def naive_mha(m, x, causal):
    B, N, C = x.shape
    h = m.heads
    q, k, v = m.qkv(x).split(C, dim=-1)
    q, k, v = (t.view(B, N, h, C // h).transpose(1, 2) for t in (q, k, v))  # (B, h, N, hd)
    s = q @ k.transpose(-1, -2) / math.sqrt(C // h)
    if causal:
        s = s.masked_fill(torch.ones(N, N).triu(1).bool(), float("-inf"))
    y = torch.softmax(s, -1) @ v
    return m.proj(y.transpose(1, 2).reshape(B, N, C))


@pytest.mark.parametrize("heads", [1, 2, 8])
@pytest.mark.parametrize("causal", [False, True])
def test_softmax_equals_naive(heads, causal):
    torch.manual_seed(0)
    m = get_mixer("softmax")(32, causal=causal, heads=heads)
    x = torch.randn(2, 11, 32)
    torch.testing.assert_close(m(x), naive_mha(m, x, causal), rtol=1e-4, atol=1e-5)


def test_softmax_refuses_heads_not_dividing():
    with pytest.raises(ValueError, match="does not divide"):
        get_mixer("softmax")(30, heads=4)


@pytest.mark.parametrize("order", [2, 3])
def test_hyena_causal_by_padding(order):
    torch.manual_seed(0)
    m = get_mixer("hyena")(16, causal=True, order=order).eval()
    x = torch.randn(1, 20, 16)
    y = m(x)
    for t in (0, 7, 18):
        x2 = x.clone()
        x2[:, t + 1 :] += 5 * torch.randn_like(x2[:, t + 1 :])
        assert torch.allclose(m(x2)[:, : t + 1], y[:, : t + 1], atol=1e-5)


def test_hyena_long_range_and_filter_decay():
    """The implicit filter spans the whole sequence: token 0 influences the last token."""
    torch.manual_seed(0)
    m = get_mixer("hyena")(16, causal=True).eval()
    x = torch.randn(1, 64, 16, requires_grad=True)
    m(x)[0, -1].sum().backward()
    assert x.grad[0, 0].abs().sum() > 0
    h = m.filter(64, "cpu")
    assert h.shape == (2 * 16, 64)  # order * channels filters, one tap per offset


def test_gfnet_is_a_global_circular_filter():
    """Circular convolution commutes with circular shifts; every output sees every token."""
    torch.manual_seed(0)
    m = get_mixer("gfnet")(8, filter_size=16).eval()
    x = torch.randn(2, 16, 8)
    y = m(x)
    torch.testing.assert_close(m(torch.roll(x, 3, dims=1)), torch.roll(y, 3, dims=1), rtol=1e-4, atol=1e-5)
    x2 = x.clone()
    x2[:, 0] += 1.0
    assert ((m(x2) - y).abs().sum(-1) > 1e-6).all()
    # 2-D (built for a grid, as the builder does for images): rolling the grid rolls the output grid
    m = get_mixer("gfnet")(8, filter_size=16, grid=True).eval()
    g = torch.randn(1, 16, 8)
    yg = m(g, hw=(4, 4)).view(1, 4, 4, 8)
    rolled = torch.roll(g.view(1, 4, 4, 8), (1, 2), dims=(1, 2)).reshape(1, 16, 8)
    torch.testing.assert_close(m(rolled, hw=(4, 4)).view(1, 4, 4, 8), torch.roll(yg, (1, 2), dims=(1, 2)), rtol=1e-4, atol=1e-5)


def test_gfnet_matches_explicit_fft_filter():
    torch.manual_seed(0)
    m = get_mixer("gfnet")(4, filter_size=9).eval()  # 16 tokens -> 9 rfft bins: no resampling
    x = torch.randn(1, 16, 4)
    w = torch.view_as_complex(m.weight.contiguous())  # (9, C)
    ref = torch.fft.irfft(torch.fft.rfft(x, dim=1, norm="ortho") * w, n=16, dim=1, norm="ortho")
    torch.testing.assert_close(m(x), ref, rtol=1e-4, atol=1e-5)


def test_ffn_choices():
    x = torch.randn(2, 5, 16)
    mlp, glu = build_ffn("mlp", 16, 2.0), build_ffn("glu", 16, 2.0)
    assert mlp(x).shape == x.shape and glu(x).shape == x.shape
    assert mlp.fc1.out_features == 32
    # SwiGLU: the first projection makes gate and value halves
    assert glu.fc1.out_features == 32 and glu.fc2.in_features == 16
    assert build_ffn("none", 16, 2.0) is None
    # token-wise: changing token 0 leaves token 1 unchanged
    x2 = x.clone()
    x2[:, 0] += 1
    assert torch.equal(glu(x2)[:, 1], glu(x)[:, 1])


@pytest.mark.parametrize("name", ["gfnet", "conv"])
def test_layout_dependent_parameters_all_used(name):
    """A 1-D model holds no 2-D filter rows it never uses (the params objective stays honest)."""
    seq, grid = get_mixer(name)(8, grid=False), get_mixer(name)(8, grid=True)
    n_seq = sum(p.numel() for p in seq.parameters())
    n_grid = sum(p.numel() for p in grid.parameters())
    assert n_grid > n_seq
    F_, k, C = 32, 3, 8  # defaults: gfnet filter_size 32, conv kernel_size 3
    assert n_seq == {"gfnet": F_ * C * 2, "conv": C * k + C}[name]
    assert n_grid == {"gfnet": F_ * F_ * C * 2, "conv": C * k * k + C}[name]
    x = torch.randn(1, 16, 8)
    with pytest.raises(ValueError, match="grid"):
        seq(x, hw=(4, 4))
