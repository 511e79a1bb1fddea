"""The FFN layers (search_spaces/layers.py) against the formulas written out by hand."""

import pytest
import torch
import torch.nn.functional as F

from search_spaces.ffn import build_ffn


@pytest.mark.parametrize("dim,ratio", [(8, 2.0), (6, 1.5)], ids=["8x2", "6x1.5"])
def test_mlp_is_linear_gelu_linear(dim, ratio):
    torch.manual_seed(0)
    m = build_ffn("mlp", dim, ratio)
    x = torch.randn(2, 3, dim)
    w1, b1, w2, b2 = m.fc1.weight, m.fc1.bias, m.fc2.weight, m.fc2.bias
    assert w1.shape == (round(ratio * dim), dim)
    assert torch.allclose(m(x), F.gelu(x @ w1.T + b1) @ w2.T + b2, atol=1e-6)


@pytest.mark.parametrize("dim,ratio", [(8, 2.0), (6, 1.5)], ids=["8x2", "6x1.5"])
def test_glu_is_swiglu_with_the_gate_first(dim, ratio):
    torch.manual_seed(0)
    m = build_ffn("glu", dim, ratio)
    x = torch.randn(2, 3, dim)
    hidden = m.fc1.out_features
    assert hidden % 2 == 0 and m.fc2.in_features == hidden // 2
    h = x @ m.fc1.weight.T + m.fc1.bias
    gate, value = h[..., : hidden // 2], h[..., hidden // 2 :]
    assert torch.allclose(m(x), (F.silu(gate) * value) @ m.fc2.weight.T + m.fc2.bias, atol=1e-6)
    assert sorted(m.state_dict()) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]  # checkpoints as before


def test_no_ffn():
    assert build_ffn("none", 8, 2.0) is None
