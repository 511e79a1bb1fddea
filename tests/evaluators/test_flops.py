"""FLOP counts against hand-written analytic counts, per mixer family, at two sequence lengths.

Convention (evaluators.flops): 2 FLOPs per multiply-add in matmuls and convolutions; attention
2 (D_qk + D_v) per (query, key) pair (dense and causal: all N x M pairs; a window: its pairs);
FFTs 5 n log2 n per complex transform of n points, half for a real one; elementwise ops free.
Each analytic count below is (projections, token mixing): the projections are everything that
grows linearly by construction, the mixing part is what each test checks the growth of.
"""

import math

import pytest
import torch

import kernels
import kernels.local
from evaluators.cost import flops_per_sample
from evaluators.flops import FLOP_FORMULAS, count_flops, flop_counter, uncounted_ops
from search_spaces import ArchSpec, BlockSpec, FFNSpec, MixerSpec, StageSpec, StemSpec, build_model
from search_spaces.builder import Block
from search_spaces.mixer_registry import get_mixer, get_mixer_info, list_mixers
from search_spaces.task_io import TaskIO

aten = torch.ops.aten


def lin(n, i, o):
    """A linear layer i -> o over n tokens."""
    return 2 * n * i * o


def attn(pairs, d, dv):
    """Q K^T and P V over ``pairs`` (query, key) pairs (summed over heads)."""
    return 2 * pairs * (d + dv)


def fft(n, transforms, real=False):
    """``transforms`` FFTs of n points: 5 n log2 n each, half for real ones."""
    return round(transforms * 5 * n * math.log2(n) / (2 if real else 1))


def window_pairs(n, window, dilation=1, causal=False):
    """(query, key) pairs of a 1-D window over n tokens, clipped at the ends, by enumeration."""
    offsets = range(-(window - 1), 1) if causal else range(-(window // 2), window // 2 + 1)
    return sum(0 <= i + dilation * t < n for i in range(n) for t in offsets)


# ---- the analytic counts: name, params, causal, grid, C -> (projections(N), mixing(N)) ----------------------
# N is the token count; on a grid (H, W) = (4, N // 4).

def _softmax(N, C, h=4):
    return lin(N, C, 3 * C) + lin(N, C, C), attn(h * N * N, C // h, C // h)


def _gqa(N, C, h=4, kv=2):
    hd = C // h
    return lin(N, C, C) + lin(N, C, 2 * kv * hd) + lin(N, C, C), attn(h * N * N, hd, hd)


def _sqa(N, C, h=4, qh=2, kv=1):
    hd = C // h
    return lin(N, C, qh * hd) + lin(N, C, 2 * kv * hd) + lin(N, qh * hd, C), attn(qh * N * N, hd, hd)


def _single_head(N, C, ratio=0.25, qk=16):
    p = int(C * ratio)
    return lin(N, p, 2 * qk + p) + lin(N, p, p), attn(N * N, qk, p)


def _moh(N, C, h=4, shared=1):
    routers = lin(N, C, h - shared) + lin(N, C, 2)  # routed heads' router, shared/routed split
    proj, mix = _softmax(N, C, h)
    return proj + routers, mix


def _diff(N, C, h=2, g=1):
    d = C // (2 * h)
    proj = 2 * lin(N, C, (h + g) * d) + 2 * lin(N, C, C)  # q, k; v, out
    return proj, attn(h * N * N, d, 2 * d) + attn(g * N * N, d, (h // g) * 2 * d)  # signal + shared noise maps


def _linear(N, C, h=4, cosformer=False):
    hd = C // h
    f = 2 * hd if cosformer else hd  # feature width
    # S = phi(K)^T V, phi(Q) S, and the normalizer phi(Q) . sum phi(K), per head
    return lin(N, C, 3 * C) + lin(N, C, C), h * (2 * 2 * N * f * hd + 2 * N * f)


def _linear_causal(N, C, h=4, chunk=64):
    """kernels.linear_attention's causal path, in chunks of 64 (the sequence zero-padded to them):
    per chunk K_c^T V_c, tril(Q_c K_c^T) V_c and Q_c times the state of the earlier chunks."""
    hd, Np = C // h, -(-N // chunk) * chunk
    per_head = 2 * Np * hd * hd + 2 * Np * chunk * hd + 2 * Np * chunk * hd + 2 * Np * hd * hd
    return lin(N, C, 3 * C) + lin(N, C, C), h * per_head


def _local(N, C, h=4, window=5, dilation=1, causal=False, grid=False):
    if grid:
        H, W = 4, N // 4
        pairs = window_pairs(H, window, dilation) * window_pairs(W, window, dilation)
    else:
        pairs = window_pairs(N, window, dilation, causal)
    return lin(N, C, 3 * C) + lin(N, C, C), attn(h * pairs, C // h, C // h)


def _fnet(N, C, grid=False):
    return 0, fft(N * C, 1)  # one complex transform over (tokens, channels) or (H, W, channels)


def _gfnet(N, C, grid=False):
    return 0, 2 * fft(N, C, real=True)  # rfft and irfft over the tokens (or the H x W grid), per channel


def _hyena(N, C, order=2, fd=8, k=3, causal=False):
    L = N if causal else 2 * N - 1  # filter taps
    filt = lin(L, 9, fd) + lin(L, fd, fd) + lin(L, fd, order * C)  # implicit filter MLP (4 bands)
    short = 2 * N * (order + 1) * C * k  # depthwise short conv
    proj = lin(N, C, (order + 1) * C) + short + filt + lin(N, C, C)
    n_fft = 2 * N if causal else 3 * N
    return proj, order * 3 * fft(n_fft, C, real=True)  # per step: rfft(v), rfft(h), irfft


def _strip(N, C, h=2, sr=2, qk_ratio=2):
    M, hd = -(-N // sr), C // h
    dq = hd // qk_ratio
    proj = lin(N, C, h * dq) + lin(M, C, h * dq) + lin(M, C, C) + lin(N, C, C)
    return proj, attn(h * N * M, dq, hd)


def _conv(N, C, k=3):
    return 2 * N * C * k, 0


CASES = [  # id, mixer, params, causal, grid, C, analytic, growth of the mixing part
    ("softmax", "softmax", {"heads": 4}, False, False, 32, _softmax, "quadratic"),
    ("softmax-causal", "softmax", {"heads": 4}, True, False, 32, _softmax, "quadratic"),
    ("gqa", "gqa", {"heads": 4, "kv_heads": 2}, True, False, 32, _gqa, "quadratic"),
    ("sqa", "sqa", {"heads": 4, "q_heads": 2, "kv_heads": 1}, False, False, 32, _sqa, "quadratic"),
    ("single_head", "single_head", {"ratio": 0.25, "qk_dim": 16}, False, False, 64, _single_head, "quadratic"),
    ("moh", "moh", {"heads": 4, "shared": 1, "topk": 2}, False, False, 32, _moh, "quadratic"),
    ("subsampled-eval", "subsampled", {"heads": 4, "groups": 2}, True, False, 32, _softmax, "quadratic"),
    ("diff", "diff", {"heads": 2, "noise_heads": 1}, False, False, 32, _diff, "quadratic"),
    ("strip", "strip", {"heads": 2, "sr": 2, "qk_ratio": 2}, False, False, 32, _strip, "quadratic"),
    ("linear", "linear", {"heads": 4}, False, False, 32, _linear, "linear"),
    ("linear-causal", "linear", {"heads": 4}, True, False, 32, _linear_causal, "linear"),
    ("linear-cosformer", "linear", {"heads": 4, "cosformer": True}, False, False, 32,
     lambda N, C: _linear(N, C, cosformer=True), "linear"),
    ("local", "local", {"heads": 4, "window": 5}, False, False, 32, _local, "linear"),
    ("local-causal", "local", {"heads": 4, "window": 5}, True, False, 32,
     lambda N, C: _local(N, C, causal=True), "linear"),
    ("local-dilated", "local", {"heads": 4, "window": 3, "dilation": 2}, False, False, 32,
     lambda N, C: _local(N, C, window=3, dilation=2), "linear"),
    ("local-2d", "local", {"heads": 4, "window": 3}, False, True, 32,
     lambda N, C: _local(N, C, window=3, grid=True), "linear"),
    ("fnet", "fnet", {}, False, False, 32, _fnet, "nlogn"),
    ("fnet-2d", "fnet", {}, False, True, 32, _fnet, "nlogn"),
    ("gfnet", "gfnet", {"filter_size": 8}, False, False, 32, _gfnet, "nlogn"),
    ("gfnet-2d", "gfnet", {"filter_size": 8}, False, True, 32, _gfnet, "nlogn"),
    ("hyena", "hyena", {"order": 2, "filter_dim": 8, "short_kernel": 3}, False, False, 16, _hyena, "nlogn"),
    ("hyena-causal", "hyena", {"order": 2, "filter_dim": 8, "short_kernel": 3}, True, False, 16,
     lambda N, C: _hyena(N, C, causal=True), "nlogn"),
    ("conv", "conv", {"kernel_size": 3}, False, False, 32, _conv, "none"),
]


def mixer_flops(name, params, causal, grid, C, N):
    layout = {"grid": grid} if get_mixer(name).grid_aware else {}
    m = get_mixer(name)(C, causal=causal, **layout, **params).eval()
    return count_flops(m, torch.randn(1, N, C), hw=(4, N // 4) if grid else None)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_mixer_flops_match_the_analytic_count_and_grow_as_the_family_should(case):
    _, name, params, causal, grid, C, analytic, growth = case
    N1, N2 = 64, 128
    counts = {N: mixer_flops(name, params, causal, grid, C, N) for N in (N1, N2)}
    for N, count in counts.items():
        proj, mix = analytic(N, C)
        assert count == proj + mix, (N, count, proj, mix)
    mix1, mix2 = (counts[N] - analytic(N, C)[0] for N in (N1, N2))
    if growth == "quadratic":
        assert mix1 > 0 and mix2 == 4 * mix1
    elif growth == "nlogn":  # n log n, n the transform size: ratio 2 log(2n) / log(n), 2.33 at n = 64
        assert mix1 > 0 and 2 < mix2 / mix1 < 2.5
    elif growth == "linear":  # linear up to the window clipped at the ends
        assert mix1 > 0 and 2 * mix1 <= mix2 <= 2.05 * mix1
    else:
        assert mix1 == mix2 == 0


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_softmax_block_counts_more_than_linear_attention_at_n256_c64(causal):
    """The ranking the counter used to invert: at N=256, C=64 attention's N^2 term dominates."""
    N, C = 256, 64
    x = torch.randn(1, N, C)

    def block(mixer):
        spec = BlockSpec(MixerSpec(mixer, {"heads": 4}), FFNSpec("mlp", 2))
        return count_flops(Block(C, spec, causal).eval(), x)

    ffn = lin(N, C, 2 * C) + lin(N, 2 * C, C)
    assert block("softmax") == sum(_softmax(N, C)) + ffn  # 8.4M projections + 16.8M attention + FFN
    assert block("softmax") > block("linear")
    assert block("linear") == sum((_linear_causal if causal else _linear)(N, C)) + ffn


@pytest.mark.parametrize("name, grid", [("fnet", False), ("fnet", True), ("gfnet", False), ("gfnet", True)])
def test_spectral_token_mixing_is_counted(name, grid):
    N, C = 64, 32
    count = mixer_flops(name, {}, False, grid, C, N)
    assert count > 0 and count == sum((_fnet if name == "fnet" else _gfnet)(N, C))


# ---- whole models -----------------------------------------------------------------------------

def _model(mixer, params, io, dim, stem=StemSpec("embed")):
    block = BlockSpec(MixerSpec(mixer, params), FFNSpec("mlp", 2))
    return build_model(ArchSpec(stem, (StageSpec(dim, (block,)),), causal=io.causal), io)


@pytest.mark.parametrize("mixer, params, analytic", [
    ("softmax", {"heads": 4}, _softmax),
    ("linear", {"heads": 4}, _linear_causal),
    ("local", {"heads": 4, "window": 5}, lambda N, C: _local(N, C, causal=True)),
    ("hyena", {"order": 2, "filter_dim": 8, "short_kernel": 3}, lambda N, C: _hyena(N, C, causal=True)),
], ids=["softmax", "linear", "local", "hyena"])
@pytest.mark.parametrize("N", [32, 64])
def test_token_model_flops_per_sample(mixer, params, analytic, N):
    """A causal token model: embedding (free), one block (mixer + MLP), per-token head."""
    C, V = 16, 16
    io = TaskIO("tokens", num_classes=V, seq_len=N, vocab_size=V, causal=True, per_token=True)
    proj, mix = analytic(N, C)
    expected = proj + mix + lin(N, C, 2 * C) + lin(N, 2 * C, C) + lin(N, C, V)
    assert flops_per_sample(_model(mixer, params, io, C), io) == expected


@pytest.mark.parametrize("mixer, params, analytic", [
    ("fnet", {}, _fnet),
    ("gfnet", {"filter_size": 8}, _gfnet),
    ("local", {"heads": 4, "window": 3}, lambda N, C: _local(N, C, window=3, grid=True)),
], ids=["fnet", "gfnet", "local-2d"])
@pytest.mark.parametrize("side", [8, 16])
def test_image_model_flops_per_sample(mixer, params, analytic, side):
    """An image model: a 2 x 2 patch stem over an 8 x (2 side) image gives a 4 x side grid of
    tokens; one block (mixer + MLP); a pooled head."""
    C, classes, patch = 16, 10, 2
    io = TaskIO("image", num_classes=classes, image_size=(8, 2 * side), in_channels=1)
    H, W = 4, side  # the grid the stem makes; the analytic counts take (4, N // 4)
    N = H * W
    stem = 2 * N * C * 1 * patch * patch  # a patch conv: one output per token and channel
    proj, mix = analytic(N, C)
    expected = stem + proj + mix + lin(N, C, 2 * C) + lin(N, 2 * C, C) + lin(1, C, classes)
    model = _model(mixer, params, io, C, stem=StemSpec("patch2d", patch))
    assert flops_per_sample(model, io) == expected


# ---- nothing costly goes uncounted --------------------------------------------------------------

def _modes(name):
    info = get_mixer_info(name)
    grids = (True,) if info.needs_2d else (False, True)
    return [(name, causal, grid) for causal in ((False, True) if info.causal else (False,)) for grid in grids
            if not (causal and grid and get_mixer(name).grid_aware)]


@pytest.mark.parametrize("name, causal, grid", [m for n in list_mixers() for m in _modes(n)])
def test_every_mixer_calls_only_counted_or_elementwise_ops(name, causal, grid):
    """Any op without a formula that is not elementwise, a reduction, softmax, a norm, pooling,
    resampling or data movement fails here: a new mixer cannot hide its cost from the count."""
    layout = {"grid": grid} if get_mixer(name).grid_aware else {}
    m = get_mixer(name)(32, causal=causal, **layout).eval()
    x, hw = torch.randn(1, 64, 32), ((4, 16) if grid else None)
    assert uncounted_ops(m, x, hw=hw) == set()
    assert count_flops(m, x, hw=hw) > 0


# ---- the attention formulas themselves ----------------------------------------------------------

def test_attention_formulas_read_masks_as_sparsity_on_every_kernel():
    """The kernels PyTorch has no (mask-aware) formula for, called by schema: a boolean or an
    additive (-inf) mask charges the open pairs only; no mask or is_causal, all N x M pairs."""
    B, H, N, D = 2, 3, 8, 4
    q, k, v = torch.randn(B, H, N, D), torch.randn(B, H, N, D), torch.randn(B, H, N, 2 * D)
    tril = torch.ones(N, N, dtype=torch.bool).tril()
    bias = torch.zeros(N, N).masked_fill(~tril, float("-inf"))
    dense, causal_pairs = B * H * N * N, B * H * N * (N + 1) // 2
    cpu = FLOP_FORMULAS[aten._scaled_dot_product_flash_attention_for_cpu]
    assert cpu(q, k, v) == attn(dense, D, 2 * D)
    assert cpu(q, k, v, 0.0, True) == attn(dense, D, 2 * D)  # is_causal: dense, as PyTorch counts it
    assert cpu(q, k, v, attn_mask=bias) == attn(causal_pairs, D, 2 * D)
    efficient = FLOP_FORMULAS[aten._scaled_dot_product_efficient_attention]
    assert efficient(q, k, v, tril[None, None], False) == attn(causal_pairs, D, 2 * D)  # broadcast mask
    assert efficient(q, k, v, None, False) == attn(dense, D, 2 * D)
    cudnn = FLOP_FORMULAS[aten._scaled_dot_product_cudnn_attention]
    assert cudnn(q, k, v, bias.expand(B, H, N, N), False) == attn(causal_pairs, D, 2 * D)


def test_attention_backward_is_counted_on_cpu():
    """Forward 2 (D + Dv) per pair; backward recomputes Q K^T and forms dP, dV, dQ, dK."""
    B, H, N, D = 1, 2, 16, 8
    q, k, v = (torch.randn(B, H, N, D, requires_grad=True) for _ in range(3))
    counter = flop_counter()
    with counter:
        torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()
    pairs = B * H * N * N
    assert counter.get_total_flops() == attn(pairs, D, D) + 2 * pairs * (3 * D + 2 * D)


def test_fft_formulas_convention():
    """5 n log2 n per complex transform, n the product of the transformed sizes; real: half.
    The kind is the one PyTorch runs: fft of a real input is a real-input transform."""
    x = torch.randn(2, 16, 8)
    for fn, n, transforms, real in [
        (lambda: torch.fft.fft(x.to(torch.complex64), dim=1), 16, 16, False),
        (lambda: torch.fft.fft(x, dim=1), 16, 16, True),
        (lambda: torch.fft.fft2(x.to(torch.complex64), dim=(1, 2)), 128, 2, False),
        (lambda: torch.fft.rfft(x, dim=1), 16, 16, True),
        (lambda: torch.fft.rfft(x, n=32, dim=1), 32, 16, True),
        (lambda: torch.fft.irfft(torch.fft.rfft(x, dim=1), n=16, dim=1), 16, 2 * 16, True),
    ]:
        assert count_flops(fn) == fft(n, transforms, real), (n, transforms, real)


def test_windows_are_counted_on_either_path_and_the_kernel_keeps_its_own():
    """At a size where the kernel takes its banded path (elementwise ops), the count is still the
    window's pairs; counting does not change which path the kernel takes afterwards."""
    N, C, window = 256, 32, 3
    assert kernels.local.uses_banded(N, ((-1, 1),))  # the banded path at this size
    m = get_mixer("local")(C, heads=4, window=window).eval()
    x = torch.randn(1, N, C)
    proj, mix = _local(N, C, window=window)
    assert count_flops(m, x) == proj + mix
    with torch.no_grad():
        m(x)
    assert kernels.last_path("local_attention") == "torch_banded"
