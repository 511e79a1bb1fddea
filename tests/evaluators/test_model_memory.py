"""The memory check of every model the engine builds (evaluators.model_memory, evaluators.fit's
deployment profiles): the estimate made on the meta device is what a real run counts, a model it
accepts uses no more than it allowed, and a model it refuses is never built. Nothing large is
allocated here: "too large" comes from a small available memory ($MIXER_NAS_MEMORY)."""

from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import search_spaces
from evaluators import fit, model_memory
from evaluators.cost import example_input
from evaluators.errors import TooLarge, TrialFailure
from evaluators.memory import PeakMemoryMode
from evaluators.tasks import make_task
from search_spaces import ArchSpec, BlockSpec, FFNSpec, MixerSpec, StageSpec, StemSpec, TaskIO, build_model
from search_spaces.deploy_profiles import Profile, Scale, profile_model, scale_arch
from search_spaces.schema import SettingError
from tests.cli_helpers import load_space_text

TOKENS = TaskIO(kind="tokens", num_classes=16, seq_len=24, vocab_size=16, causal=True, per_token=True)
IMAGE = TaskIO(kind="image", num_classes=10, image_size=(8, 8), in_channels=3)


def _arch(mixer: str, io: TaskIO, dim: int = 16, depth: int = 2, **params) -> ArchSpec:
    block = BlockSpec(MixerSpec(mixer, params), FFNSpec("glu", 2))
    stem = StemSpec("patch2d", patch=2) if io.kind == "image" else StemSpec()
    return ArchSpec(stem, (StageSpec(dim, (block,) * depth),), causal=io.causal)


def _counted(model, x, training: bool) -> int:
    """What evaluators.memory counts for one real forward (inference) or forward and backward."""
    gc.disable()
    try:
        if not training:
            with torch.inference_mode(), PeakMemoryMode() as mode:
                model.eval()(x)
            return mode.peak
        with PeakMemoryMode() as mode:
            logits = model.train()(x)
            target = torch.zeros(logits.shape[:-1].numel(), dtype=torch.long)
            F.cross_entropy(logits.flatten(0, -2), target).backward()
            del logits
        return mode.peak
    finally:
        gc.enable()


def _registry():
    for name in search_spaces.list_mixers():
        info = search_spaces.get_mixer_info(name)
        io = IMAGE if info.needs_2d or not info.causal else TOKENS
        yield pytest.param(name, io, id=f"{name}-{io.kind}")


@pytest.mark.parametrize("mixer,io", list(_registry()))
def test_the_meta_estimate_is_what_a_real_run_counts(mixer, io):
    """For every registered mixer, inference and training: the peak counted on the meta device
    (nothing allocated) is the peak counted on a real run, to within a few KiB (never below)."""
    arch = _arch(mixer, io)
    torch.manual_seed(0)
    model, x = build_model(arch, io), example_input(io, 3)
    for mode in ("inference", "training"):
        real = _counted(model, x, mode == "training")
        estimate, params, _ = model_memory.estimate(arch, io, 3, "float32", mode)
        assert params == sum(p.numel() for p in model.parameters())
        assert real <= estimate <= real + 16384, (mode, real, estimate)


def test_attention_is_counted_at_the_kernel_the_cpu_picks():
    """On meta PyTorch always picks the math kernel (an N x N map); the estimate follows the CPU's
    flash kernel instead, and the math one where the CPU would take it."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    io = TaskIO(kind="tokens", num_classes=16, seq_len=256, vocab_size=16, causal=True, per_token=True)
    arch = _arch("softmax", io, depth=1, heads=2)
    flash = model_memory.estimate(arch, io, 2).peak
    with sdpa_kernel(SDPBackend.MATH):
        math = model_memory.estimate(arch, io, 2).peak
    assert math - flash >= 2 * 2 * 256 * 256 * 4  # at least one fp32 (B, H, N, N) map
    torch.manual_seed(0)
    assert flash == _counted(build_model(arch, io), example_input(io, 2), False)


# ------------------------------------------------------------------ property: refused or within
ARCHS = st.builds(lambda mixer, dim, depth: (mixer, dim, depth), st.sampled_from(["softmax", "linear", "hyena", "local"]),
                  st.sampled_from([8, 16]), st.integers(1, 2))
PROFILES = st.builds(lambda k, m, heads, n, b, dtype: Profile("p", seq_len=n, batch_size=b, dtype=dtype,
                                                              scale=Scale(dim=k, depth=m, heads=heads)),
                     st.integers(1, 3), st.integers(1, 2), st.sampled_from(["scale", "keep"]), st.integers(4, 96),
                     st.integers(1, 3), st.sampled_from(["float32", "bfloat16"]))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=ARCHS, profile=PROFILES, available=st.integers(2**16, 2**23))
def test_a_profile_model_is_refused_or_uses_no_more_than_allowed(arch, profile, available):
    """Random profile scales, lengths, batches and dtypes on tiny shapes, against a small available
    memory: the check refuses the model (TooLarge, naming the profile), or the model built and run
    (float32 weights, its input, the forward's counted peak at the profile's dtype) uses no more
    than the estimate, which is within the planned share of the memory."""
    from evaluators.latency import LatencyConfig, on_device

    mixer, dim, depth = arch
    assume(not (mixer == "hyena" and profile.dtype == "bfloat16"))  # Hyena's filters do not run in bfloat16 on CPU
    spec = _arch(mixer, TOKENS, dim, depth)
    try:
        need = model_memory.check_profile(spec, TOKENS, profile, available=available)
    except TooLarge as e:
        assert str(e).startswith("profile p: too large for this machine (") and "may be used)" in str(e)
        return
    assert need.bytes <= model_memory.PLANNED * available
    torch.manual_seed(0)
    model = profile_model(spec, TOKENS, profile)
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    io_p = profile.task_io(TOKENS)
    model, x = on_device(model, io_p, LatencyConfig(batch_size=profile.batch_size, dtype=profile.dtype))
    used = weights + x.numel() * x.element_size() + _counted(model, x, training=False)
    assert used <= need.bytes, (used, need)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=ARCHS, batch=st.integers(1, 8))
def test_a_training_step_uses_no_more_than_its_estimate(arch, batch):
    """One real AdamW step (weights, moments, gradients, activations, as counted) is within
    ``training_need``."""
    mixer, dim, depth = arch
    spec = _arch(mixer, TOKENS, dim, depth)
    need = model_memory.training_need(spec, TOKENS, batch)
    torch.manual_seed(0)
    model, x = build_model(spec, TOKENS), example_input(TOKENS, batch)
    opt = torch.optim.AdamW(model.parameters())
    gc.disable()
    try:
        with PeakMemoryMode() as mode:
            logits = model(x)
            F.cross_entropy(logits.flatten(0, 1), torch.zeros(logits.shape[0] * logits.shape[1], dtype=torch.long)).backward()
            del logits
            opt.step()
    finally:
        gc.enable()
    weights = sum(p.numel() * 4 for p in model.parameters())
    assert weights + 2 * x.numel() * 8 + mode.peak <= need.bytes, (mode.peak, need)


# ------------------------------------------------------------------ a trial: refused before it is built
def test_a_trial_too_large_fails_before_anything_is_built(monkeypatch):
    """evaluate() checks the proxy and every profile it measures first: too large is a
    TrialFailure (a FAIL trial with the reason) and no model is built."""
    from evaluators import evaluation

    space = load_space_text("""
        name: m
        task: {name: mqar, params: {vocab_size: 16, seq_len: 8, num_kv_pairs: 2, n_train: 32, n_test: 16}}
        objectives: {accuracy: maximize, latency_ms@long: minimize}
        deploy: {long: {seq_len: 4096, scale: {dim: 4x}}}
        train: {steps: 1, batch_size: 4}
        arch: {stages: [{depth: [1], dim: [8], mixer: {choices: {softmax: {heads: [1]}}}}]}
    """)
    settings_ = evaluation.EvalSettings.from_space(space)
    arch = search_spaces.sample(space, _FirstChoice())
    task = make_task(settings_.task, settings_.task_params)
    proxy = model_memory.proxy_need(arch, space.io, 4, eval_batch=16)
    long = model_memory.profile_need(arch, space.io, space.profiles["long"])
    assert proxy.bytes < long.bytes

    def no_build(*a, **k):
        raise AssertionError("a model was built")

    monkeypatch.setattr(evaluation, "build_model", no_build)
    monkeypatch.setenv(fit.MEMORY_ENV, str(int(proxy.bytes / model_memory.PLANNED) + 1))  # the proxy fits, long not
    with pytest.raises(TrialFailure, match=r"^profile long: too large for this machine \(its model at batch 1, "
                                           r"float32 needs about [0-9.,]+ [KMG]iB: [0-9,]+ parameters; .* may be used\)$"):
        evaluation.evaluate(arch, settings_)
    monkeypatch.setenv(fit.MEMORY_ENV, "1KiB")  # nothing fits: the proxy is refused first
    with pytest.raises(TooLarge, match=r"^too large for this machine \(training it at batch 4 needs about"):
        evaluation.check_fits_here(arch, task, settings_)


class _FirstChoice:
    """A define-by-run trial that takes the first choice of everything."""

    def suggest_categorical(self, name, choices):
        return choices[0]


# ------------------------------------------------------------------ the space: profiles at load
PROFILED = """
    name: p
    task: {name: mqar, params: {vocab_size: 16, seq_len: 8, num_kv_pairs: 2, n_train: 32, n_test: 16}}
    objectives: {accuracy: maximize}
    deploy: {long: %s}
    arch: {stages: [{depth: [1, 2], dim: [8, 16], mixer: {choices: {softmax: {heads: [1, 2]}, hyena: {}}}}]}
"""


@pytest.mark.parametrize("profile,key,value", [
    ("{scale: {dim: 64x}}", "scale.dim", "64x"),
    ("{scale: {depth: 500x}}", "scale.depth", "500x"),
    ("{seq_len: 1000000}", "seq_len", "1000000"),
    ("{batch_size: 100000, seq_len: 64}", "batch_size", "100000"),
    ("{batch_size: 2, seq_len: 2000000, scale: {dim: 2x}}", "seq_len", "2000000"),
], ids=["scale.dim", "scale.depth", "seq_len", "batch_size", "seq_len-weighs-most"])
def test_a_profile_no_model_can_fit_is_refused_naming_its_weightiest_setting(profile, key, value):
    space = load_space_text(PROFILED % profile)
    p = space.profiles["long"]
    params, need = fit.profile_floor(space, p)
    fit.check_profiles(space, need)  # exactly enough: accepted
    fit.check_profiles(space, None)  # unknown: not checked
    with pytest.raises(SettingError) as e:
        fit.check_profiles(space, need - 1)
    assert str(e.value).startswith(f"deploy.long.{key}: {value} is not allowed (too large for this machine: the "
                                   f"smallest model of this space at profile long has at least {params:,} parameters")


def test_an_image_profile_is_refused_at_its_image_size():
    space = load_space_text("""
        name: v
        task: {name: digits}
        objectives: {accuracy: maximize}
        deploy: {big: {image_size: [4096, 4096]}}
        arch: {stem: {patch: [2]}, stages: [{depth: [1], dim: [16], mixer: {choices: {conv: {kernel_size: [3]}}}}]}
    """)
    _, need = fit.profile_floor(space, space.profiles["big"])
    with pytest.raises(SettingError, match=r"^deploy.big.image_size: \[4096, 4096\] is not allowed \(too large"):
        fit.check_profiles(space, need - 1)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(profile=PROFILES, seed=st.integers(0, 2**16))
def test_the_profile_floor_is_a_lower_bound(profile, seed):
    """No architecture of the space has a profile model with fewer parameters, or needing less,
    than the floor the load-time check refuses on."""
    import optuna

    space = load_space_text(PROFILED % "{}")
    params, need = fit.profile_floor(space, profile)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(3):
        arch = search_spaces.sample(space, study.ask())
        with torch.device("meta"):
            real = sum(p.numel() for p in build_model(scale_arch(arch, profile), profile.task_io(space.io)).parameters())
        assert params <= real
        assert need <= model_memory.profile_need(arch, space.io, profile).bytes


@pytest.mark.parametrize("raw,bytes_", [("512MiB", 2**29), ("2e9", 2 * 10**9), ("1.5 GiB", 3 * 2**29), ("64kb", 64000)])
def test_the_available_memory_can_be_given(monkeypatch, raw, bytes_):
    monkeypatch.setenv(fit.MEMORY_ENV, raw)
    assert fit.available_memory() == bytes_


@pytest.mark.parametrize("raw", ["lots", "-1GB", "0", "8 parsecs"])
def test_a_malformed_available_memory_is_named(monkeypatch, raw):
    monkeypatch.setenv(fit.MEMORY_ENV, raw)
    with pytest.raises(SettingError, match=r"^\$MIXER_NAS_MEMORY: .* is not allowed \(bytes > 0, or a number with a unit"):
        fit.available_memory()
