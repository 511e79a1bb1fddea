"""Incremental decoding: prefill + token-by-token steps reproduce the causal forward, for every
causal mixer in the registry and for built hybrid models; the kept state matches decode_state;
decode_ms is measured for causal tasks that ask for it."""

import contextlib

import optuna
import pytest
import torch

import evaluators.evaluation as evaluate_mod
import nas
from evaluators import load_space
from evaluators.cost import decode_state_mb
from evaluators.decode import measure_decode
from evaluators.evaluation import EvalSettings, evaluate
from evaluators.latency import LatencyConfig
from evaluators.train import TrainConfig
from nas.engine.config import load_space_checked
from nas.errors import UserError
from search_spaces import (
    ArchSpec,
    BlockSpec,
    FFNSpec,
    MixerSpec,
    StageSpec,
    StemSpec,
    TaskIO,
    build_model,
    get_mixer,
    get_mixer_info,
    list_mixers,
    sample,
)
from tests.cli_helpers import TINY_SPACE, invoke, write_space

CAUSAL = [m for m in list_mixers() if get_mixer_info(m).causal]
DIM = 64  # every head width a multiple of 8, so binary's packed key bits fill whole bytes
# parameter sets beyond the defaults that take other decoding paths
VARIANTS = {
    "linear": [{"cosformer": True}, {"feature": "relu"}],
    "local": [{"window": 5, "dilation": 3}, {"window": 3, "dilation": 1}],
    "hyena": [{"order": 3, "short_kernel": 1}, {"short_kernel": 7}],
    "conv": [{"kernel_size": 9}],
    "gqa": [{"kv_heads": 1}],
    "sqa": [{"heads": 8, "q_heads": 4, "kv_heads": 1}],
    "binary": [{"max_rel": 0}, {"max_rel": 2}],
    "diff": [{"noise_heads": 4, "head_norm": False}],
    "moh": [{"shared": 0, "topk": 1}, {"heads": 8, "shared": 2, "topk": 3}],
    "single_head": [{"ratio": 1.0, "qk_dim": 8}],
}
CASES = [(m, {}) for m in CAUSAL] + [(m, p) for m, ps in VARIANTS.items() if m in CAUSAL for p in ps]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Token steps are tiny ops: on a shared 2-core machine one thread is ~10x faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _id(case):
    name, params = case
    return "-".join([name, *(f"{k}={v}" for k, v in params.items())])


def _close(got, want):
    """Equal up to fp32 rounding, also relative to how much the outputs vary over positions."""
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    spread = (want - want.mean(dim=1, keepdim=True)).abs().max()
    assert (got - want).abs().max() <= 1e-3 * spread


def _mixer(name, params):
    torch.manual_seed(0)
    return get_mixer(name)(DIM, causal=True, **params).eval()


def _decode_mixer(m, x, prefix, max_len=None):
    cache = m.init_cache(x.shape[0], max_len or x.shape[1])
    y, cache = m.prefill(x[:, :prefix], cache)
    ys = [y]
    for t in range(prefix, x.shape[1]):
        y, cache = m.step(x[:, t : t + 1], cache)
        ys.append(y)
    return torch.cat(ys, dim=1), cache


def test_every_causal_mixer_is_covered():
    assert {"softmax", "gqa", "linear", "local", "hyena", "conv", "glu"} <= set(CAUSAL)


@pytest.mark.parametrize("case", CASES, ids=_id)
@torch.no_grad()
def test_mixer_decode_matches_forward(case):
    m = _mixer(*case)
    x = torch.randn(2, 13, DIM)
    full = m(x)
    for prefix in (0, 1, 6, 13):
        got, cache = _decode_mixer(m, x, prefix)
        _close(got, full)
        assert cache.pos == 13


@pytest.mark.parametrize("name", CAUSAL)
@torch.no_grad()
def test_a_stepped_cache_can_be_stepped_again(name):
    """Stepping leaves the cache it started from valid (decode timing and beam search rely on it)."""
    m = _mixer(name, {})
    x = torch.randn(1, 9, DIM)
    full = m(x)
    cache = m.init_cache(1, 9)
    y, cache = m.prefill(x[:, :5], cache)
    ys = [y]
    for t in range(5, 9):
        m.step(torch.randn(1, 1, DIM), cache)  # another candidate token, thrown away
        y, cache = m.step(x[:, t : t + 1], cache)
        ys.append(y)
    _close(torch.cat(ys, dim=1), full)


@pytest.mark.parametrize("case", CASES, ids=_id)
@pytest.mark.parametrize("n", [3, 11])
@torch.no_grad()
def test_cache_holds_what_decode_state_counts(case, n):
    m = _mixer(*case)
    _, cache = _decode_mixer(m, torch.randn(3, n, DIM), prefix=n // 2)
    assert cache.state_bytes() == 4 * m.decode_state(n)


def test_decoding_needs_a_causal_mixer_and_room():
    with pytest.raises(ValueError, match="causal=False"):
        get_mixer("softmax")(32, causal=False).init_cache(1, 4)
    with pytest.raises(ValueError, match="causal=False"):
        get_mixer("fnet")(32).init_cache(1, 4)
    m = _mixer("softmax", {})
    cache = m.init_cache(1, 2)
    _, cache = m.prefill(torch.randn(1, 2, DIM), cache)
    with pytest.raises(ValueError, match="cache is full"):
        m.step(torch.randn(1, 1, DIM), cache)
    with pytest.raises(ValueError, match="empty cache"):
        m.prefill(torch.randn(1, 1, DIM), cache)
    with pytest.raises(ValueError, match="one token"):
        m.step(torch.randn(1, 2, DIM), m.init_cache(1, 4))


# --------------------------------------------------------------------------- models
TOK = TaskIO(kind="tokens", num_classes=24, seq_len=15, vocab_size=24, causal=True, per_token=True)


def _blk(mixer, ffn="mlp", norm="pre", **params):
    return BlockSpec(MixerSpec(mixer, params), FFNSpec(ffn, 2), norm)


HYBRIDS = {
    "hyena-attn-local-cosformer": ArchSpec(StemSpec("embed"), (StageSpec(32, (
        _blk("hyena", "glu", order=3), _blk("softmax", heads=2), _blk("local", "none", window=3, dilation=2),
        _blk("linear", cosformer=True))),), causal=True),
    "post-norm-two-widths": ArchSpec(StemSpec("embed"), (
        StageSpec(32, (_blk("conv", norm="post"), _blk("diff", "glu", norm="post"), _blk("binary", norm="post"))),
        StageSpec(48, (_blk("gqa", "none", heads=4, kv_heads=1), _blk("moh"), _blk("sqa"),
                       _blk("single_head", "glu"), _blk("glu")))), causal=True),
}


def _seq_hybrid_samples(k=4, seed=0):
    space = load_space("seq-hybrid")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(k):
        out.append(sample(space, study.ask()))
    return space.io, out


def _decode_model(model, x, prefix):
    logits, cache = model.prefill(x[:, :prefix], max_len=x.shape[1])
    out = [logits]
    for t in range(prefix, x.shape[1]):
        step, cache = model.decode_step(x[:, t], cache)
        out.append(step[:, None])
    return torch.cat(out, dim=1), cache


@pytest.mark.parametrize("name", list(HYBRIDS))
@torch.no_grad()
def test_hybrid_model_decode_matches_forward(name):
    torch.manual_seed(0)
    model = build_model(HYBRIDS[name], TOK).eval()
    x = torch.randint(0, TOK.vocab_size, (2, TOK.seq_len))
    full = model(x)
    for prefix in (0, 1, 8):
        got, cache = _decode_model(model, x, prefix)
        _close(got, full)
    assert cache.state_bytes() == decode_state_mb(model, TOK.seq_len) * 2**20
    short = x[:, :9]  # a shorter sequence: max_len 9 is its length
    _close(_decode_model(model, short, 4)[0], model(short))


@torch.no_grad()
def test_seq_hybrid_samples_decode_like_forward():
    io, archs = _seq_hybrid_samples()
    for arch in archs:
        torch.manual_seed(0)
        model = build_model(arch, io).eval()
        x = torch.randint(0, io.vocab_size, (2, io.seq_len))
        _close(_decode_model(model, x, 7)[0], model(x))


def test_non_causal_models_do_not_decode():
    io = TaskIO(kind="tokens", num_classes=5, seq_len=8, vocab_size=10)
    arch = ArchSpec(StemSpec("embed"), (StageSpec(16, (_blk("softmax", heads=2),)),))
    model = build_model(arch, io)
    with pytest.raises(ValueError, match="decoding needs a causal per-token model"):
        model.prefill(torch.zeros(1, 4, dtype=torch.long))
    model = build_model(HYBRIDS["hyena-attn-local-cosformer"], TOK)
    with pytest.raises(ValueError, match="learned positions"):
        model.init_cache(1, TOK.seq_len + 1)


# --------------------------------------------------------------------------- decode_ms
FAST = LatencyConfig(repeats=3, warmup=1, max_seconds=0.2)
MQAR = ("mqar", {"vocab_size": 32, "seq_len": 16, "num_kv_pairs": 2, "n_train": 64, "n_test": 16})


def test_measure_decode_fields_and_threads_restored():
    model = build_model(HYBRIDS["hyena-attn-local-cosformer"], TOK)
    before = torch.get_num_threads()
    r = measure_decode(model, TOK, LatencyConfig(repeats=5, max_seconds=0.3, threads=1, batch_size=2))
    assert torch.get_num_threads() == before
    assert r["decode_ms"] > 0 and r["decode_runs"] >= 5 and r["decode_spread"] >= 0
    assert set(r) == {"decode_ms", "decode_mad_ms", "decode_spread", "decode_ci", "decode_ci_low", "decode_ci_high",
                      "decode_runs", "decode_rounds", "decode_calls_per_sample", "decode_converged"}
    io = TaskIO(kind="tokens", num_classes=5, seq_len=8, vocab_size=10)
    arch = ArchSpec(StemSpec("embed"), (StageSpec(16, (_blk("softmax", heads=2),)),))
    with pytest.raises(ValueError, match="decode_ms needs a causal"):
        measure_decode(build_model(arch, io), io, FAST)


def test_evaluate_times_decoding_only_when_asked_and_under_the_latency_lock(monkeypatch):
    arch = ArchSpec(StemSpec("embed"), (StageSpec(32, (_blk("linear", heads=2), _blk("softmax", heads=2))),),
                    causal=True)
    base = {"task": MQAR[0], "task_params": MQAR[1], "train": TrainConfig(steps=2, batch_size=8), "latency": FAST}
    assert "decode_ms" not in evaluate(arch, EvalSettings(**base))
    held = []

    @contextlib.contextmanager
    def lock():
        held.append(True)
        yield
        held.pop()

    seen = []
    monkeypatch.setattr(evaluate_mod, "measure_decode",
                        lambda *a: seen.append(list(held)) or measure_decode(*a))
    m = evaluate(arch, EvalSettings(**base, decode=True), latency_lock=lock())
    assert seen == [[True]]  # timed once, with the latency lock held
    assert m["decode_ms"] > 0 and "decode_spread" in m and "latency_ms" in m


def _space_text(objectives):
    return TINY_SPACE.replace("objectives: {accuracy: maximize, latency_ms: minimize}", objectives) % {"steps": 2}


def test_settings_ask_for_decoding_when_a_search_names_decode_ms(tmp_path):
    for text, want in ((_space_text("objectives: {accuracy: maximize, decode_ms: minimize}"), True),
                       (_space_text("objectives: {accuracy: maximize}\nconstraints: {decode_ms: {max: 5}}"), True),
                       (_space_text("objectives: {accuracy: maximize, latency_ms: minimize}"), False)):
        space = load_space_checked(str(write_space(tmp_path, text=text)))
        assert EvalSettings.from_space(space).decode is want


def test_non_causal_space_naming_decode_ms_is_refused_at_load(tmp_path):
    text = _space_text("objectives: {accuracy: maximize, decode_ms: minimize}")
    text = text.replace("task: {name: mqar, params: {vocab_size: 32, seq_len: 16, num_kv_pairs: 2, n_train: 128, "
                        "n_test: 32}}", "task: {name: listops, params: {n_train: 16, n_test: 8}}")
    text = text.replace("hyena: {filter_dim: [8]}", "conv: {kernel_size: [3]}")
    path = write_space(tmp_path, text=text)
    with pytest.raises(UserError, match=r"objectives\.decode_ms: only causal tasks decode .* 'listops' is not causal"):
        load_space_checked(str(path))


@pytest.mark.slow
def test_search_records_decode_ms(tmp_path):
    space = write_space(tmp_path, text=_space_text("objectives: {accuracy: maximize, decode_ms: minimize}"))
    url = f"sqlite:///{tmp_path}/d.db"
    invoke("search", "--space", space, "--study", "d", "--storage", url, "--trials", 2, cwd=tmp_path, check=True)
    df = nas.load_trials(url, "d")
    done = df[df.state == "COMPLETE"]
    assert len(done) == 2 and (done["decode_ms"] > 0).all() and (done["latency_ms"] > 0).all()


def test_evaluate_counts_peak_memory_outside_the_latency_lock(monkeypatch):
    arch = ArchSpec(StemSpec("embed"), (StageSpec(32, (_blk("softmax", heads=2),)),), causal=True)
    base = {"task": MQAR[0], "task_params": MQAR[1], "train": TrainConfig(steps=2, batch_size=8), "latency": FAST}
    held, seen = [], []

    @contextlib.contextmanager
    def lock():
        held.append(True)
        yield
        held.pop()

    real = evaluate_mod.peak_memory_mb
    monkeypatch.setattr(evaluate_mod, "peak_memory_mb", lambda *a: seen.append(list(held)) or real(*a))
    m = evaluate(arch, EvalSettings(**base), latency_lock=lock())
    assert seen == [[]] and m["peak_mem_mb"] > 0  # counted once, not under the lock
