"""Defining properties of the attention-variant mixers, each against a naive computation written here."""

import math

import pytest
import torch
import torch.nn.functional as F

import kernels
from search_spaces import get_mixer

DIM, B, N = 32, 2, 16


def naive_attention(q, k, v, *, causal=False, mask=None, bias=None, scale=None):
    """softmax(q k^T * scale + bias, masked) v on (B, H, N, D) tensors, written out."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ k.transpose(-2, -1) * scale
    if bias is not None:
        s = s + bias
    if causal:
        s = s.masked_fill(torch.ones_like(s, dtype=torch.bool).triu(1), float("-inf"))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def heads(t, h):  # (B, N, h*d) -> (B, h, N, d)
    return t.view(t.shape[0], t.shape[1], h, -1).transpose(1, 2)


def merge(t):  # (B, h, N, d) -> (B, N, h*d)
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], -1)


@pytest.fixture
def x():
    return torch.randn(B, N, DIM, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def spy(monkeypatch):
    """Record the (q, k, v) shapes each kernels.attention call receives."""
    calls, real = [], kernels.attention

    def attention(q, k, v, **kw):
        calls.append((q.shape, k.shape, v.shape))
        return real(q, k, v, **kw)

    monkeypatch.setattr(kernels, "attention", attention)
    return calls


def _softmax(causal=False, h=4):
    torch.manual_seed(1)
    return get_mixer("softmax")(DIM, causal=causal, heads=h).eval()


# --- gqa -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_gqa_with_all_kv_heads_is_softmax(x, causal):
    ref = _softmax(causal)
    m = get_mixer("gqa")(DIM, causal=causal, heads=4, kv_heads=4).eval()
    w = ref.qkv.weight.detach()
    m.load_state_dict({"q.weight": w[:DIM], "kv.weight": w[DIM:], **{f"proj.{k}": v for k, v in ref.proj.state_dict().items()}})
    torch.testing.assert_close(m(x), ref(x))


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_gqa_shares_kv_heads_and_shrinks_kv_params(x, kv_heads):
    m = get_mixer("gqa")(DIM, heads=4, kv_heads=kv_heads).eval()
    assert m.kv.weight.numel() == 2 * DIM * DIM * kv_heads // 4  # MHA's K/V rows / (heads / kv_heads)
    q = heads(m.q(x), 4)
    k, v = (heads(t, kv_heads).repeat_interleave(4 // kv_heads, dim=1) for t in m.kv(x).chunk(2, dim=-1))
    torch.testing.assert_close(m(x), m.proj(merge(naive_attention(q, k, v))))


# --- single_head -----------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_single_head_passes_untouched_channels_and_attends_with_one_head(x, ratio, spy):
    m = get_mixer("single_head")(DIM, causal=True, ratio=ratio, qk_dim=8).eval()
    p = int(DIM * ratio)
    y = m(x)
    assert torch.equal(y[..., p:], x[..., p:])  # exactly the input, bit for bit
    assert spy[0][0][1] == 1 and spy[0][0][-1] == 8 and spy[0][2][-1] == p  # one head, qk 8, value width p
    q, k, v = m.qkv(m.pre_norm(x[..., :p])).split([8, 8, p], dim=-1)
    head = naive_attention(q[:, None], k[:, None], v[:, None], causal=True)[:, 0]
    torch.testing.assert_close(y[..., :p], m.proj(head))


# --- sqa -------------------------------------------------------------------------------------------

def test_sqa_score_flops_shrink_by_query_head_ratio(x, spy):
    get_mixer("softmax")(DIM, heads=4)(x)
    m = get_mixer("sqa")(DIM, heads=4, q_heads=2, kv_heads=1).eval()
    y = m(x)
    (mha_q, mha_k, _), (sqa_q, sqa_k, _) = spy
    flops = lambda q, k: 2 * q[0] * q[1] * q[2] * k[2] * q[3]  # noqa: E731 - Q K^T multiply-adds x 2
    assert sqa_q[-1] == mha_q[-1] == DIM // 4  # head width still set by the budget
    assert flops(sqa_q, sqa_k) * 4 == flops(mha_q, mha_k) * 2
    q = heads(m.q(x), 2)
    k, v = (heads(t, 1).expand(-1, 2, -1, -1) for t in m.kv(x).chunk(2, dim=-1))
    torch.testing.assert_close(y, m.proj(merge(naive_attention(q, k, v))))


# --- moh -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shared", [0, 1, 2])
def test_moh_all_heads_uniform_weights_is_multi_head(x, shared):
    ref = _softmax(causal=True)
    m = get_mixer("moh")(DIM, causal=True, heads=4, shared=shared, topk=4 - shared).eval()
    m.load_state_dict(ref.state_dict(), strict=False)
    for router in (m.router_shared, m.router_routed, m.router_groups):
        if router is not None:
            torch.nn.init.zeros_(router.weight)  # uniform routing weights
    torch.testing.assert_close(m(x), ref(x))


def test_moh_gates_select_topk_routed_heads(x):
    m = get_mixer("moh")(DIM, heads=4, shared=1, topk=2).train()
    g = m.gates(x)
    assert ((g[..., 1:] > 0).sum(-1) == 2).all() and (g[..., :1] > 0).all()
    assert m.aux_loss is not None and m.aux_loss.requires_grad
    # an unselected head contributes nothing: masking it by hand gives the same output
    qkv = m.qkv(x).view(B, N, 3, 4, DIM // 4).permute(2, 0, 3, 1, 4)
    y = naive_attention(*qkv.unbind(0)).transpose(1, 2) * g.unsqueeze(-1)
    torch.testing.assert_close(m(x), m.proj(y.reshape(B, N, DIM)))


# --- diff ------------------------------------------------------------------------------------------

def _diff_naive(m, x, causal):
    h, g = m.heads, m.noise_heads
    q, k = heads(m.q(x), h + g), heads(m.k(x), h + g)
    v = heads(m.v(x), h)
    rep = h // g
    a1 = naive_attention(q[:, :h], k[:, :h], v, causal=causal)
    a2 = naive_attention(q[:, h:].repeat_interleave(rep, 1), k[:, h:].repeat_interleave(rep, 1), v, causal=causal)
    y = a1 - m.lam() * a2
    if m.norm_weight is not None:
        y = y / torch.sqrt(y.pow(2).mean(-1, keepdim=True) + 1e-5) * m.norm_weight * (1 - m.lambda_init)
    return m.proj(merge(y))


def test_diff_lambda_zero_is_softmax_attention(x):
    m = get_mixer("diff")(DIM, causal=True, heads=4, noise_heads=2, lambda_init=0.0, head_norm=False).eval()
    with torch.no_grad():
        m.lambda_q2.copy_(m.lambda_q1), m.lambda_k2.copy_(m.lambda_k1)
    assert m.lam().item() == 0.0
    q, k, v = heads(m.q(x), 6)[:, :4], heads(m.k(x), 6)[:, :4], heads(m.v(x), 4)
    torch.testing.assert_close(m(x), m.proj(merge(naive_attention(q, k, v, causal=True))))


@pytest.mark.parametrize("noise_heads", [1, 2, 4], ids=["gda-4:1", "gda-2:1", "balanced"])
def test_diff_grouped_noise_maps_match_naive(x, noise_heads):
    m = get_mixer("diff")(DIM, causal=True, heads=4, noise_heads=noise_heads).eval()
    assert m.q.out_features == (4 + noise_heads) * m.d  # fewer noise heads, fewer Q/K parameters
    torch.testing.assert_close(m(x), _diff_naive(m, x, causal=True))


# --- binary ----------------------------------------------------------------------------------------

def test_binary_forward_uses_only_signs_of_q_and_k(x):
    m = get_mixer("binary")(DIM, heads=4).eval()
    y = m(x)
    with torch.no_grad():  # positive per-channel rescaling of Q and K keeps every sign
        m.qkv.weight[:2 * DIM] *= torch.rand(2 * DIM, 1) * 5 + 0.1
    torch.testing.assert_close(m(x), y, rtol=0, atol=0)
    qkv = m.qkv(x).view(B, N, 3, 4, DIM // 4).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    sq, sk = torch.where(q >= 0, 1.0, -1.0), torch.where(k >= 0, 1.0, -1.0)
    off = (torch.arange(N)[None] - torch.arange(N)[:, None]).clamp(-m.max_rel, m.max_rel) + m.max_rel
    ref = naive_attention(sq * m.tau.view(1, -1, 1, 1), sk, v, bias=m.rel_bias[:, off])
    torch.testing.assert_close(y, m.proj(merge(ref)))
    with torch.no_grad():  # flipping one channel's sign does change the output
        m.qkv.weight[0] *= -1
    assert not torch.allclose(m(x), y)


def test_binary_gradients_pass_straight_through_the_sign(x):
    m = get_mixer("binary")(DIM).train()
    m(x).square().mean().backward()
    assert m.qkv.weight.grad[:DIM].abs().sum() > 0 and m.qkv.weight.grad[DIM:2 * DIM].abs().sum() > 0


# --- subsampled ------------------------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_subsampled_eval_is_softmax(x, causal):
    ref = _softmax(causal)
    m = get_mixer("subsampled")(DIM, causal=causal, heads=4, groups=4)
    m.load_state_dict(ref.state_dict())
    torch.testing.assert_close(m.eval()(x), ref(x))


@pytest.mark.parametrize("n", [16, 11])
def test_subsampled_training_attends_within_random_disjoint_subsets(n):
    x = torch.randn(B, n, DIM)
    m = get_mixer("subsampled")(DIM, causal=True, heads=4, groups=3).train()
    torch.manual_seed(5)
    y = m(x)
    torch.manual_seed(5)
    perm = torch.rand(B, n).argsort(dim=1)  # the same draw the mixer made
    size, extra = divmod(n, 3)
    bounds = torch.tensor([0] + [size + (i < extra) for i in range(3)]).cumsum(0)
    group = torch.empty(B, n, dtype=torch.long)
    for i in range(3):
        group.scatter_(1, perm[:, bounds[i]:bounds[i + 1]], i)
    same = (group[:, :, None] == group[:, None, :])[:, None]  # (B, 1, n, n)
    qkv = m.qkv(x).view(B, n, 3, 4, DIM // 4).permute(2, 0, 3, 1, 4)
    ref = m.proj(merge(naive_attention(*qkv.unbind(0), causal=True, mask=same)))
    torch.testing.assert_close(y, ref)
    assert not torch.allclose(y, m.eval()(x))  # training really is sparse


# --- routing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("hw", [None, (4, 4), (6, 4)], ids=["1d", "grid", "grid-6x4"])
def test_routing_topk_all_regions_is_full_attention(hw):
    n = N if hw is None else hw[0] * hw[1]
    x = torch.randn(B, n, DIM)
    ref = _softmax()
    m = get_mixer("routing")(DIM, heads=4, regions=2, topk=4).eval()
    m.load_state_dict(ref.state_dict())
    torch.testing.assert_close(m(x, hw=hw), ref(x))


def test_routing_attends_only_to_routed_regions(x):
    m = get_mixer("routing")(DIM, heads=4, regions=2, topk=2).eval()  # 1-D: 4 chunks of 4 tokens
    qkv = m.qkv(x).view(B, N, 3, DIM)
    q, k = qkv[:, :, 0], qkv[:, :, 1]
    region = torch.arange(N) // 4
    qr, kr = q.view(B, 4, 4, DIM).mean(2), k.view(B, 4, 4, DIM).mean(2)
    routed = (qr @ kr.transpose(1, 2)).topk(2, dim=-1).indices  # (B, 4, 2)
    allowed = (routed[:, region][:, :, :, None] == region[None, None, None, :]).any(2)  # (B, N, N)
    ref = m.proj(merge(naive_attention(*(heads(qkv[:, :, i], 4) for i in range(3)), mask=allowed[:, None])))
    torch.testing.assert_close(m(x), ref)


# --- strip -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("hw,sr,kv_tokens", [(None, 2, 8), (None, 4, 4), ((4, 4), 2, 4), ((6, 5), 2, 9), ((4, 4), 1, 16)])
def test_strip_kv_token_count_shrinks_by_reduction(spy, hw, sr, kv_tokens):
    n = N if hw is None else hw[0] * hw[1]
    x = torch.randn(B, n, DIM)
    m = get_mixer("strip")(DIM, heads=2, sr=sr, qk_ratio=4).eval()
    y = m(x, hw=hw)
    (q, k, v), = spy
    assert k[2] == v[2] == kv_tokens and q[2] == n
    assert q[-1] == k[-1] == DIM // 2 // 4 and v[-1] == DIM // 2  # Q/K channels compressed, V not
    if hw is None:
        src = F.avg_pool1d(x.transpose(1, 2), sr, ceil_mode=True).transpose(1, 2)
    else:
        src = F.avg_pool2d(x.transpose(1, 2).reshape(B, DIM, *hw), sr, ceil_mode=True).flatten(2).transpose(1, 2)
    src = m.norm(src) if m.norm is not None else src
    ref = naive_attention(heads(m.q(x), 2), heads(m.k(src), 2), heads(m.v(src), 2))
    torch.testing.assert_close(y, m.proj(merge(ref)))
