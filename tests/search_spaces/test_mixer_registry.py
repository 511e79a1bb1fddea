"""Properties every registered mixer must have, parametrized over the registry."""

import pytest
import torch

import search_spaces
from search_spaces import get_mixer, get_mixer_info, list_mixers

DIM = 32
MODES = [(name, causal) for name in list_mixers() for causal in (False, True)
         if not causal or get_mixer_info(name).causal]


def _inputs(name, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, n, DIM, generator=g)
    hw = (4, n // 4) if get_mixer_info(name).needs_2d else None
    return x, hw


def _make(name, causal, seed=0):
    torch.manual_seed(seed)
    return get_mixer(name)(DIM, causal=causal)


@pytest.mark.parametrize("name,causal", MODES, ids=[f"{n}-{'causal' if c else 'full'}" for n, c in MODES])
def test_output_shape_and_finite(name, causal):
    m = _make(name, causal)
    x, hw = _inputs(name)
    y = m(x, hw=hw)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", [n for n in list_mixers() if not get_mixer_info(n).needs_2d])
def test_grid_input_accepted(name):
    """Every mixer that works on 1-D tokens also runs on a 2-D token grid (hw given); a mixer
    whose parameters depend on the layout is built for the grid, as the builder does for images."""
    torch.manual_seed(0)
    cls = get_mixer(name)
    m = cls(DIM, causal=False, **({"grid": True} if cls.grid_aware else {}))
    x = torch.randn(2, 16, DIM)
    assert m(x, hw=(4, 4)).shape == x.shape


@pytest.mark.parametrize("name", [n for n in list_mixers() if get_mixer_info(n).causal])
def test_causal_no_future_leakage(name):
    m = _make(name, True).eval()
    x, hw = _inputs(name)
    t = 9
    x2 = x.clone()
    x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :]) * 3
    with torch.no_grad():
        y1, y2 = m(x, hw=hw), m(x2, hw=hw)
    assert torch.allclose(y1[:, : t + 1], y2[:, : t + 1], atol=1e-5), (y1[:, : t + 1] - y2[:, : t + 1]).abs().max()
    assert not torch.allclose(y1[:, t + 1 :], y2[:, t + 1 :], atol=1e-5)  # the future did change


@pytest.mark.parametrize("name,causal", MODES, ids=[f"{n}-{'causal' if c else 'full'}" for n, c in MODES])
def test_gradients_reach_every_parameter(name, causal):
    m = _make(name, causal).train()
    x, hw = _inputs(name)
    x.requires_grad_(True)
    m(x, hw=hw).pow(2).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}.{pname} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name}.{pname} got a zero gradient"


@pytest.mark.parametrize("name,causal", MODES, ids=[f"{n}-{'causal' if c else 'full'}" for n, c in MODES])
def test_deterministic_under_seed(name, causal):
    x, hw = _inputs(name)
    a, b = _make(name, causal, seed=3), _make(name, causal, seed=3)
    a.eval(), b.eval()
    with torch.no_grad():
        assert torch.equal(a(x, hw=hw), b(x, hw=hw))


@pytest.mark.parametrize("name", [n for n in list_mixers() if not get_mixer_info(n).causal])
def test_causal_refused_where_unsupported(name):
    with pytest.raises(ValueError, match="causal"):
        get_mixer(name)(DIM, causal=True)
    arch = search_spaces.ArchSpec(
        stem=search_spaces.StemSpec("embed"),
        stages=(search_spaces.StageSpec(DIM, (search_spaces.BlockSpec(search_spaces.MixerSpec(name)),)),),
        causal=True,
    )
    with pytest.raises(search_spaces.ArchValidationError, match=r"stages\[0\]\.blocks\[0\]\.mixer\.type"):
        arch.validate()


@pytest.mark.parametrize("name", list_mixers())
def test_registry_entry_complete(name):
    info = get_mixer_info(name)
    assert info.doc, f"{name} has no docstring"
    for pname, p in info.params.items():
        assert p.check(p.default) is None, f"{name}.{pname} default {p.default!r} fails its own check"
    m = get_mixer(name)(DIM, causal=False)  # every parameter has a default
    assert isinstance(m, search_spaces.Mixer)


@pytest.mark.parametrize("name", [n for n in list_mixers() if get_mixer_info(n).causal])
def test_every_causal_mixer_declares_its_decode_state(name):
    m = get_mixer(name)(DIM, causal=True)
    a, b = m.decode_state(16), m.decode_state(64)
    assert isinstance(a, int) and 0 <= a <= b
