"""Zero-cost proxies against independent hand computations on tiny networks."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from evaluators.evaluation import METRICS, EvalSettings, evaluate, zero_cost_requested
from evaluators.latency import LatencyConfig
from evaluators.metrics import METRIC_REGISTRY
from evaluators.train import TrainConfig
from evaluators.zero_cost import (
    ZERO_COST,
    compute_zero_cost,
    grad_norm,
    jacob_cov,
    naswot,
    register_zero_cost,
    snip,
    synflow,
)
from search_spaces.task_io import TaskIO

IO = TaskIO(kind="signal", num_classes=2, seq_len=3, in_channels=1)


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()


def weights(m):
    return [t.detach().numpy().copy() for t in (m[1].weight, m[1].bias, m[3].weight, m[3].bias)]


def batch(seed=1, n=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (n,), generator=g)


def test_synflow_equals_hand_computation():
    m = mlp()
    w1, b1, w2, b2 = (np.abs(a) for a in weights(m))
    h = w1 @ np.ones(3) + b1  # all positive: the ReLU passes everything
    s = w2.T @ np.ones(2)  # dR/dh
    expected = (w2 * h[None]).sum() + b2.sum() + (w1 * s[:, None]).sum() + (b1 * s).sum()
    assert synflow(m, IO) == pytest.approx(expected, rel=1e-9)


def test_synflow_token_model_feeds_embedding_all_ones():
    class TokenNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(5, 3)
            self.head = nn.Linear(3, 1)

        def forward(self, x):
            return self.head(self.embed(x))  # (B, N, 1)

    torch.manual_seed(0)
    net = TokenNet()
    io = TaskIO(kind="tokens", num_classes=1, seq_len=4, vocab_size=5, causal=True, per_token=True)
    e, w, b = (np.abs(t.detach().numpy()) for t in (net.embed.weight, net.head.weight, net.head.bias))
    col = e.sum(0)  # embedding output of an all-ones multi-hot input: ones(V) @ |E|
    n = 4  # R = n * (w . col + b)
    expected = n * ((w[0] * col).sum() + b.sum()) + n * (e * w[0][None]).sum()
    assert synflow(net, io) == pytest.approx(expected, rel=1e-6)


def test_synflow_deep_network_does_not_overflow():
    torch.manual_seed(0)
    layers = []
    for _ in range(60):
        layers += [nn.Linear(64, 64), nn.ReLU()]
    net = nn.Sequential(nn.Flatten(), nn.Linear(3, 64), *layers, nn.Linear(64, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(8.0)  # float32 would overflow at this depth
    assert math.isfinite(synflow(net, IO))


def test_naswot_equals_hamming_kernel_logdet():
    m = mlp()
    x, _ = batch(n=5)
    w1, b1, _, _ = weights(m)
    codes = (x.numpy().reshape(5, 3) @ w1.T + b1 > 0).astype(int)  # pre-activations of the ReLU
    units = codes.shape[1]
    ham = (codes[:, None, :] != codes[None, :, :]).sum(-1)
    k = units - ham
    sign, logdet = np.linalg.slogdet(k.astype(float))
    got = naswot(m, x)
    if sign == 0:
        assert got == -math.inf
    else:
        assert got == pytest.approx(logdet, rel=1e-9)


def test_naswot_wider_codes_nonsingular():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(3, 64), nn.GELU(), nn.Linear(64, 2)).double()
    x, _ = batch(n=8)
    codes = (x.reshape(8, 3) @ m[1].weight.T + m[1].bias > 0).numpy().astype(float)
    k = codes @ codes.T + (1 - codes) @ (1 - codes).T
    assert naswot(m, x) == pytest.approx(np.linalg.slogdet(k)[1], rel=1e-9)


def _hand_grads(m, x, y):
    w1, b1, w2, b2 = weights(m)
    xs = x.numpy().reshape(len(x), 3)
    z1 = xs @ w1.T + b1
    a = np.maximum(z1, 0)
    z2 = a @ w2.T + b2
    p = np.exp(z2 - z2.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz2 = (p - np.eye(2)[y.numpy()]) / len(xs)
    dw2, db2 = dz2.T @ a, dz2.sum(0)
    dz1 = (dz2 @ w2) * (z1 > 0)
    dw1, db1 = dz1.T @ xs, dz1.sum(0)
    return [w1, b1, w2, b2], [dw1, db1, dw2, db2]


def test_snip_and_grad_norm_equal_hand_backprop():
    m = mlp()
    x, y = batch()
    ws, gs = _hand_grads(m, x, y)
    assert snip(m, x, y) == pytest.approx(sum(np.abs(w * g).sum() for w, g in zip(ws, gs)), rel=1e-9)
    assert grad_norm(m, x, y) == pytest.approx(math.sqrt(sum((g ** 2).sum() for g in gs)), rel=1e-9)


def test_jacob_cov_equals_hand_jacobian_score():
    m = mlp()
    x, _ = batch(n=5)
    w1, b1, w2, _ = weights(m)
    xs = x.numpy().reshape(5, 3)
    jac = ((np.ones(2) @ w2)[None] * (xs @ w1.T + b1 > 0)) @ w1  # (B, 3): d sum(out) / dx
    v = np.linalg.eigvalsh(np.corrcoef(jac))
    v = np.clip(v, 0, None)
    expected = -np.sum(np.log(v + 1e-5) + 1.0 / (v + 1e-5))
    assert jacob_cov(m, x, IO) == pytest.approx(expected, rel=1e-6)


def test_proxies_leave_model_and_rng_untouched():
    m = mlp()
    m.train()
    x, y = batch()
    before = [p.detach().clone() for p in m.parameters()]
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    scores = compute_zero_cost(m, IO, x, y)
    assert torch.equal(torch.rand(3), expected_next)  # the global RNG continues as if nothing ran
    assert set(scores) == set(ZERO_COST)
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))
    assert all(p.grad is None for p in m.parameters()) and m.training


def test_zero_cost_metrics_are_named_and_only_computed_on_request():
    for name in ZERO_COST:
        assert METRICS[name] == "maximize"
    assert METRICS["train_loss_sum"] == "minimize"
    assert zero_cost_requested(["accuracy", "snip", "latency_ms", "synflow"]) == ("synflow", "snip")
    base = dict(task="mqar", task_params=dict(vocab_size=16, seq_len=8, num_kv_pairs=2, n_train=32, n_test=16),
                train=TrainConfig(steps=2, batch_size=8, warmup_steps=1),
                latency=LatencyConfig(repeats=2, warmup=1, max_seconds=0.05))
    from search_spaces import ArchSpec, BlockSpec, FFNSpec, MixerSpec, StageSpec, StemSpec

    arch = ArchSpec(stem=StemSpec("embed", 1, 0), causal=True, stages=(StageSpec(dim=16, blocks=(
        BlockSpec(mixer=MixerSpec("softmax", {"heads": 2}), ffn=FFNSpec("mlp", 2.0), norm="pre"),), downsample="none"),))
    plain = evaluate(arch, EvalSettings(**base))
    with_zc = evaluate(arch, EvalSettings(**base, zero_cost=("synflow", "naswot")))
    assert "synflow" not in plain and "naswot" not in plain
    assert math.isfinite(with_zc["synflow"]) and "naswot" in with_zc
    assert with_zc["train_loss_sum"] == pytest.approx(plain["train_loss_sum"])  # training unchanged


def test_a_proxy_registered_after_import_is_a_metric_and_is_computed_on_request():
    @register_zero_cost("param_count", doc="parameters, as a score")
    def param_count(model, io, x, y):
        return float(sum(p.numel() for p in model.parameters()))

    try:
        metric = METRIC_REGISTRY["param_count"]
        assert (metric.direction, metric.at, metric.zero_cost, metric.doc) == ("maximize", "init", True,
                                                                                "parameters, as a score")
        assert METRICS["param_count"] == "maximize"
        assert zero_cost_requested(["accuracy", "param_count"]) == ("param_count",)
        x, y = batch()
        assert compute_zero_cost(mlp(), IO, x, y, ("param_count",)) == {"param_count": 26.0}  # 3 * 4 + 4 + 4 * 2 + 2
        assert "param_count" in compute_zero_cost(mlp(), IO, x, y)  # all registered proxies by default
    finally:
        ZERO_COST.unregister("param_count")
        METRIC_REGISTRY.unregister("param_count")


def test_a_proxy_cannot_take_a_metric_name_and_leaves_nothing_behind():
    with pytest.raises(ValueError, match="metric 'accuracy' is registered twice"):
        register_zero_cost("accuracy", lambda model, io, x, y: 0.0)
    assert "accuracy" not in ZERO_COST and not METRIC_REGISTRY["accuracy"].zero_cost
    with pytest.raises(TypeError, match="must be callable"):
        register_zero_cost("not_a_function", 3)
    assert "not_a_function" not in ZERO_COST and "not_a_function" not in METRIC_REGISTRY
