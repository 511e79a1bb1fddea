"""The banded PyTorch path of sliding-window attention (1-D and 2-D) against the masked
references, forward and every gradient; which path the public ops pick; and that the banded
path's memory grows linearly in N where the masked one grows quadratically.

No Triton here: these are the paths CPU training and evaluation run.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kernels
from evaluators.memory import peak_memory_bytes
from kernels.local import (
    local_attention_banded,
    local_attention_reference,
    local_mask,
    neighborhood_attention,
    neighborhood_attention_banded,
    neighborhood_attention_reference,
    neighborhood_mask,
    uses_banded,
)

TOL = {torch.float32: 1e-5, torch.float16: 5e-3}


def rel_err(a: torch.Tensor, b: torch.Tensor, floor: float = 1e-12) -> float:
    a, b = a.float(), b.float()
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    return ((a - b).norm() / b.norm().clamp_min(floor)).item()


def make(*shape, dtype=torch.float32, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype).requires_grad_(grad)


def qkv(b, h, n, d, dv=None, **kw):
    return make(b, h, n, d, seed=0, **kw), make(b, h, n, d, seed=1, **kw), make(b, h, n, dv or d, seed=2, **kw)


def check_fwd_bwd(fn, ref, q, k, v, tol=TOL[torch.float32]):
    """``fn`` against ``ref`` (in fp32): the output, then dq, dk, dv for one random output gradient."""
    out = fn(q, k, v)
    want = ref(*(t.detach().float().requires_grad_() for t in (q, k, v)))
    assert out.shape == want.shape and out.dtype == q.dtype
    assert rel_err(out, want) < tol, f"forward rel err {rel_err(out, want):.2e}"
    if not q.requires_grad:
        return
    do = make(*out.shape, seed=7)
    got = torch.autograd.grad(out, (q, k, v), do.to(out.dtype))
    qf, kf, vf = (t.detach().float().requires_grad_() for t in (q, k, v))
    exp = torch.autograd.grad(ref(qf, kf, vf), (qf, kf, vf), do)
    for name, a, b in zip("qkv", got, exp):
        assert a.shape == b.shape
        err = rel_err(a, b, floor=1.0)  # floor: a gradient can be exactly 0 (window of one key)
        assert err < tol * 4, f"d{name} rel err {err:.2e}"


# ---- 1-D --------------------------------------------------------------------------------------

# (N, D, window, dilation, causal)
LOCAL = [
    (33, 16, 5, 1, False),
    (33, 16, 5, 1, True),
    (33, 16, 3, 2, False),
    (33, 16, 3, 2, True),
    (31, 8, 7, 3, False),
    (31, 8, 7, 3, True),
    (33, 8, 4, 1, False),    # even window: |t| <= 2, five keys
    (7, 16, 9, 1, False),    # window wider than the sequence
    (7, 16, 9, 1, True),
    (5, 8, 31, 2, False),    # most of the window's offsets miss the sequence altogether
    (20, 16, 1, 1, False),   # only itself
    (20, 16, 1, 3, True),
    (1, 8, 3, 1, True),      # a single token
]


def _local_id(c):
    n, d, w, dil, causal = c
    return f"N{n}-D{d}-w{w}-dil{dil}-{'causal' if causal else 'full'}"


@pytest.mark.parametrize("case", LOCAL, ids=[_local_id(c) for c in LOCAL])
def test_banded_matches_reference(case):
    n, d, w, dil, causal = case
    check_fwd_bwd(lambda *t: local_attention_banded(*t, window=w, dilation=dil, causal=causal),
                  lambda *t: local_attention_reference(*t, window=w, dilation=dil, causal=causal),
                  *qkv(2, 3, n, d, grad=True))


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_banded_scale_dv_and_strided_inputs(causal):
    """Custom scale, Dv != D, and q/k as strided views of one packed projection, as mixers pass them."""
    packed = make(2, 19, 2, 3, 16, grad=True)  # (B, N, 2, H, D)
    q, k = packed.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, D), not contiguous
    v = make(2, 3, 19, 24, seed=2, grad=True)
    check_fwd_bwd(lambda *t: local_attention_banded(*t, window=5, dilation=2, causal=causal, scale=0.3),
                  lambda *t: local_attention_reference(*t, window=5, dilation=2, causal=causal, scale=0.3), q, k, v)


def test_banded_fp16():
    q, k, v = qkv(1, 2, 33, 32, dtype=torch.float16)
    check_fwd_bwd(lambda *t: local_attention_banded(*t, window=5, dilation=2),
                  lambda *t: local_attention_reference(*t, window=5, dilation=2), q, k, v, tol=TOL[torch.float16])


@pytest.mark.parametrize("window,dilation,causal", [(3, 1, False), (7, 2, True), (31, 1, False), (40, 1, True)],
                         ids=["w3", "w7-dil2-causal", "w31", "w40-causal"])
def test_dispatch_switches_to_banded_at_the_rule(window, dilation, causal):
    """The public op's PyTorch path is masked SDPA below N = 128 + 12 w and banded from there;
    both give the reference's answer. (w40 causal: the 40 offsets all fit from N = 40 on.)"""
    offsets = window if causal else 2 * (window // 2) + 1
    at = 128 + 12 * offsets
    for n, path in ((at - 1, "sdpa_masked"), (at, "torch_banded")):
        q, k, v = qkv(1, 2, n, 8)
        out = kernels.local_attention(q, k, v, window=window, dilation=dilation, causal=causal, backend="torch")
        assert kernels.last_path("local_attention") == path
        want = local_attention_reference(q, k, v, window=window, dilation=dilation, causal=causal)
        assert rel_err(out, want) < TOL[torch.float32]


def test_dispatch_counts_only_the_offsets_that_fit():
    """Window 31 at dilation 64 over 256 tokens: only |t| <= 3 reaches a key (7 offsets, not 31),
    so the rule asks for N >= 128 + 84 and the banded path runs."""
    assert uses_banded(256, ((-3, 3),)) and not uses_banded(256, ((-15, 15),))
    q, k, v = qkv(1, 2, 256, 8)
    out = kernels.local_attention(q, k, v, window=31, dilation=64)
    assert kernels.last_path("local_attention") == "torch_banded"
    assert rel_err(out, local_attention_reference(q, k, v, window=31, dilation=64)) < TOL[torch.float32]


# ---- 2-D --------------------------------------------------------------------------------------

# (H, W, window, dilation)
GRID = [
    (5, 6, 3, 1),
    (5, 6, 3, 2),
    (4, 7, 5, 1),
    (6, 5, 4, 3),   # even window: |t| <= 2 per axis
    (3, 3, 7, 1),   # window wider than the grid
    (1, 9, 3, 2),   # a single row
    (5, 5, 1, 1),   # only itself
]


@pytest.mark.parametrize("case", GRID, ids=[f"{h}x{w}-w{win}-dil{dl}" for h, w, win, dl in GRID])
def test_neighborhood_banded_matches_masked(case):
    """Against the reference and against the masked SDPA computation the 2-D mixer used to run."""
    H, W, window, dil = case
    q, k, v = qkv(2, 3, H * W, 16, grad=True)
    check_fwd_bwd(lambda *t: neighborhood_attention_banded(*t, (H, W), window=window, dilation=dil),
                  lambda *t: neighborhood_attention_reference(*t, (H, W), window=window, dilation=dil), q, k, v)
    mask = neighborhood_mask((H, W), window=window, dilation=dil)
    with torch.no_grad():
        masked = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        assert rel_err(neighborhood_attention_banded(q, k, v, (H, W), window=window, dilation=dil), masked) < 1e-5


def test_neighborhood_dispatch():
    """16 x 16 with a 3 x 3 window: 9 offsets, 128 + 108 = 236 <= 256 tokens: banded; 8 x 8: masked."""
    for side, path in ((16, "torch_banded"), (8, "sdpa_masked")):
        q, k, v = qkv(1, 2, side * side, 8)
        out = neighborhood_attention(q, k, v, (side, side), window=3, dilation=2)
        assert kernels.last_path("neighborhood_attention") == path
        assert rel_err(out, neighborhood_attention_reference(q, k, v, (side, side), window=3, dilation=2)) < 1e-5


BAD = {
    "hw-tokens": lambda: neighborhood_attention(*qkv(1, 2, 12, 8), (3, 5), window=3),
    "hw-rank": lambda: neighborhood_attention(*qkv(1, 2, 12, 8), (12,), window=3),
    "window": lambda: neighborhood_attention_banded(*qkv(1, 2, 12, 8), (3, 4), window=0),
    "dilation": lambda: local_attention_banded(*qkv(1, 2, 12, 8), window=3, dilation=0),
    "shape": lambda: local_attention_banded(make(1, 2, 12, 8), make(1, 2, 11, 8), make(1, 2, 12, 8), window=3),
}


@pytest.mark.parametrize("call", list(BAD.values()), ids=list(BAD))
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()


# ---- memory -----------------------------------------------------------------------------------

class _Attend(nn.Module):
    """(B, H, N, D) -> window attention of x with itself, by ``fn(q, k, v)``."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x, x, x)


def _peak(fn, n):
    return peak_memory_bytes(_Attend(fn), make(1, 2, n, 16))


def _grid(n):  # (N // 32, 32): the 2-D cases below
    return (n // 32, 32)


PATHS = {  # name: (banded, masked) over the same window
    "1d-w7": (lambda q, k, v: local_attention_banded(q, k, v, window=7),
              lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=local_mask(q.shape[2], window=7))),
    "2d-w5": (lambda q, k, v: neighborhood_attention_banded(q, k, v, _grid(q.shape[2]), window=5),
              lambda q, k, v: F.scaled_dot_product_attention(
                  q, k, v, attn_mask=neighborhood_mask(_grid(q.shape[2]), window=5))),
}


@pytest.mark.parametrize("banded,masked", list(PATHS.values()), ids=list(PATHS))
def test_banded_memory_is_linear_in_n(banded, masked):
    """Doubling N doubles the banded path's peak (within 2.2x) and about quadruples the masked
    path's (its (N, N) mask, and the float copy SDPA makes of it); at N = 1024 the banded peak is
    under a quarter of one fp32 N x N map."""
    b512, b1024 = _peak(banded, 512), _peak(banded, 1024)
    m512, m1024 = _peak(masked, 512), _peak(masked, 1024)
    assert 1.8 < b1024 / b512 < 2.2, (b512, b1024)
    assert m1024 / m512 > 3.5, (m512, m1024)
    assert b1024 < 1024 * 1024 * 4 / 4, b1024
