"""Peak activation memory on the CPU (evaluators.memory): exact counts on hand-built modules,
scaling on built models, and the ``peak_mem_mb`` metric of ``measure_latency`` / ``evaluate``."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from evaluators.cost import example_input
from evaluators.evaluation import METRICS
from evaluators.latency import LatencyConfig, measure_latency
from evaluators.memory import PeakMemoryMode, peak_memory_bytes
from search_spaces import (
    ArchSpec,
    BlockSpec,
    FFNSpec,
    MixerSpec,
    StageSpec,
    StemSpec,
    TaskIO,
    build_model,
)

F32 = 4  # bytes per fp32 value
X = torch.randn(4, 16)  # (B, C): every hand-built module below reads it


class Chain(nn.Module):
    """16 -> 32 -> 8 -> 32. ``keep``: return every intermediate, so none is freed early."""

    def __init__(self, keep: bool):
        super().__init__()
        self.keep = keep
        self.l1, self.l2, self.l3 = nn.Linear(16, 32), nn.Linear(32, 8), nn.Linear(8, 32)

    def forward(self, x):
        if self.keep:
            a = self.l1(x)
            b = self.l2(a)
            return a, b, self.l3(b)
        return self.l3(self.l2(self.l1(x)))  # l1's output is freed once l2 has returned


class Lambda(nn.Module):
    def __init__(self, fn, *modules):
        super().__init__()
        self.fn, self.mods = fn, nn.ModuleList(modules)

    def forward(self, x):
        return self.fn(x, *self.mods)


def test_linear_peak_is_its_output():
    assert peak_memory_bytes(nn.Linear(16, 8), X) == 4 * 8 * F32


def test_freed_intermediates_lower_the_peak_by_a_known_amount():
    rows = X.shape[0]
    chain = peak_memory_bytes(Chain(keep=False), X)
    keep = peak_memory_bytes(Chain(keep=True), X)
    assert chain == rows * max(32 + 8, 8 + 32) * F32  # at most two of the three outputs live at once
    assert keep == rows * (32 + 8 + 32) * F32
    assert keep - chain == rows * 32 * F32


def test_views_and_in_place_ops_are_not_counted_twice():
    def fn(x, lin):
        y = lin(x)  # (4, 8): the only allocation
        y.relu_()
        z = y.view(2, 2, 8).transpose(0, 1)
        z.mul_(2)
        torch.mul(z, 3, out=z)
        return z[..., :3], y.unbind(0), y.flatten()

    assert peak_memory_bytes(Lambda(fn, nn.Linear(16, 8)), X) == 4 * 8 * F32


def test_parameters_buffers_and_the_input_are_not_counted():
    lin = nn.Linear(16, 8)
    lin.register_buffer("scale", torch.ones(8))
    assert peak_memory_bytes(Lambda(lambda x, m: (m.weight.t(), m.scale[:4], x[:2], x.view(-1)), lin), X) == 0
    # a copy of a parameter is new memory
    assert peak_memory_bytes(Lambda(lambda x, m: m.weight * 1, lin), X) == 8 * 16 * F32


def test_temporaries_factories_constants_and_out_resizes():
    # the (1000,) temporary is live while its sum is computed, then freed
    assert peak_memory_bytes(Lambda(lambda x: torch.ones(1000).sum()), X) == 1000 * F32 + F32
    # torch.tensor(...) made in the forward is new memory (it reaches the dispatcher through lift_fresh)
    assert peak_memory_bytes(Lambda(lambda x: torch.tensor([1.0] * 100)), X) == 100 * F32

    def grow(x):
        buf = x.new_empty(0)  # zero bytes when made ...
        torch.mul(x, 2, out=buf)  # ... resized to x's size by out=
        return buf

    assert peak_memory_bytes(Lambda(grow), X) == X.numel() * F32


def test_mode_follows_frees_and_stops_at_exit():
    q = torch.randn(1, 2, 8, 4)
    with torch.inference_mode(), PeakMemoryMode() as mode:
        a = torch.empty(100)
        assert mode.live == 100 * F32
        y = torch.nn.functional.scaled_dot_product_attention(q, q, q)  # followed into its kernel
        assert mode.live == 100 * F32 + y.numel() * F32
        b = torch.empty(50)
        del a, y  # still followed after the decomposition
        assert mode.live == 50 * F32
    assert mode.peak == (100 + q.numel() + 50) * F32
    del b  # freed after exit: not followed any more
    assert mode.live == 50 * F32


# ---- built models ---------------------------------------------------------------------------

def _model(mixer: str, n: int, **params):
    io = TaskIO(kind="tokens", num_classes=20, seq_len=n, vocab_size=20, causal=True, per_token=True)
    block = BlockSpec(MixerSpec(mixer, params), FFNSpec("glu", 2))
    torch.manual_seed(0)
    return build_model(ArchSpec(StemSpec("embed"), (StageSpec(32, (block,)),), causal=True), io), io


def _peak(mixer: str, n: int, batch: int = 2, **params) -> int:
    model, io = _model(mixer, n, **params)
    return peak_memory_bytes(model, example_input(io, batch))


def test_peak_grows_with_batch_and_length_and_is_deterministic():
    by_batch = [_peak("softmax", 32, b, heads=2) for b in (1, 2, 4)]
    by_len = [_peak("softmax", n, 2, heads=2) for n in (16, 32, 64)]
    assert by_batch[0] < by_batch[1] < by_batch[2]
    assert by_len[0] < by_len[1] < by_len[2]
    assert _peak("softmax", 32, 2, heads=2) == by_batch[1]
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # a count, not a timing: the thread count does not change it
        assert _peak("softmax", 32, 2, heads=2) == by_batch[1]
    finally:
        torch.set_num_threads(prev)


def _second_difference(mixer: str, n: int, **params) -> int:
    """f(3n) - 2 f(2n) + f(n) = 2 c n^2 for f(N) = a + b N + c N^2: zero iff f is linear in N."""
    f = [_peak(mixer, k * n, **params) for k in (1, 2, 3)]
    return f[2] - 2 * f[1] + f[0]


def test_softmax_attention_peak_is_quadratic_only_where_the_map_exists():
    """On CPU ``kernels.attention`` calls SDPA, which picks its flash kernel: the attention map is
    worked on in blocks inside it, never as a tensor, so the peak is linear in N. Forcing SDPA's
    math backend materializes the map (scores and their softmax live at once): quadratic."""
    n, b, heads = 64, 2, 2
    assert _second_difference("softmax", n, heads=heads) == 0
    with sdpa_kernel(SDPBackend.MATH):
        quad = _second_difference("softmax", n, heads=heads)
    two_maps = 2 * b * heads * F32  # bytes per N^2: two fp32 (B, H, N, N) maps
    assert quad >= 2 * two_maps * n * n
    # linear attention keeps a (D, D) state per chunk of 64: linear in N
    assert _second_difference("linear", n, heads=heads) == 0


# ---- the metric -----------------------------------------------------------------------------

def test_cpu_latency_reports_peak_memory_like_cuda():
    model, io = _model("softmax", 16, heads=2)
    r = measure_latency(model, io, LatencyConfig(batch_size=2, repeats=3, warmup=1, max_seconds=0.1))
    assert r["peak_mem_mb"] == peak_memory_bytes(model, example_input(io, 2)) / 2**20 > 0
    assert METRICS["peak_mem_mb"] == "minimize"
