"""Deployment profiles (issue 18): the deploy: section, profile models, metric@profile, placement.

Costs must stay honest: a profile's model equals a hand-built model of the same size, and its
cost grows with the length as each mixer family should (exact FLOP counts, plus a loose timing).
"""

from __future__ import annotations

import time
from fractions import Fraction

import pytest
import torch
import yaml

from evaluators.cost import count_params, flops_per_sample
from evaluators.errors import TrialFailure
from evaluators.evaluation import EvalSettings, evaluate
from evaluators.ladder import LadderPruned
from evaluators.latency import LatencyConfig
from evaluators.metrics import DIRECTIONS, filter_metrics, resolve_metric
from evaluators.profile_costs import ProfileRequest, measure_profile, profile_requests, task_profile
from evaluators.spaces import bind_task
from kernels.registry import UnknownName
from nas.engine.backends.placement import GPU_TASK, check_cluster, local_gpus, measure_options, profile_runner
from nas.engine.device_lock import DeviceLock
from nas.errors import UserError
from search_spaces.arch import ArchSpec, BlockSpec, FFNSpec, MixerSpec, StageSpec, StemSpec
from search_spaces.builder import build_model
from search_spaces.deploy_profiles import Profile, Scale, metric_name, profile_model, scale_arch, split_metric
from search_spaces.space import SpaceError, parse_space
from search_spaces.task_io import TaskIO
from tests.cli_helpers import TINY_SPACE

IO = TaskIO("tokens", 32, seq_len=16, vocab_size=32, causal=True, per_token=True)
FAST = LatencyConfig(warmup=1, repeats=3, max_seconds=0.2, min_sample_ms=0)


def _space(deploy, **top):
    raw = yaml.safe_load(TINY_SPACE % {"steps": 2})
    raw["deploy"] = deploy
    raw.update(top)
    space = parse_space(raw, source="s.yaml")
    return bind_task(space)


def _arch(dim, *blocks, ffn=FFNSpec("glu", 2.0)):
    return ArchSpec(StemSpec(), (StageSpec(dim, tuple(BlockSpec(MixerSpec(t, p), ffn) for t, p in blocks)),),
                    causal=True).validate()


# ------------------------------------------------------------------------------ the deploy: section
def test_deploy_section_is_parsed_into_typed_profiles():
    space = _space({"long": {"seq_len": 256, "batch_size": 2, "device": "cpu", "dtype": "bfloat16", "threads": 1,
                             "scale": {"dim": "4x", "depth": 2, "heads": "keep"}},
                    "short": {}})
    long, short = space.profiles["long"], space.profiles["short"]
    assert list(space.profiles) == ["long", "short"]
    assert (long.seq_len, long.batch_size, long.dtype, long.scale) == (256, 2, "bfloat16", Scale(4, 2, "keep"))
    assert long.task_io(space.io).seq_len == 256 and short.task_io(space.io) == space.io  # None: the task's
    assert short == Profile("short")
    assert _space(None).profiles == {}  # no deploy: no profiles, nothing changes


@pytest.mark.parametrize("deploy,line", [
    ({"long": {"seq_len": 0}}, "deploy.long.seq_len: 0 is not allowed (an int >= 1, or null)"),
    ({"long": {"device": "tpu"}}, "deploy.long.device: 'tpu' is not allowed (cpu, cuda or cuda:<index>)"),
    ({"long": {"dtype": "int8"}}, "deploy.long.dtype: 'int8' is not allowed (one of ['float32', 'bfloat16', 'float16'])"),
    ({"long": {"scale": {"dim": "4y"}}}, "deploy.long.scale.dim: '4y' is not allowed (a whole factor >= 1, written 4 or 4x)"),
    ({"long": {"scale": {"dim": 0.5}}}, "deploy.long.scale.dim: 0.5 is not allowed (a whole factor >= 1"),
    ({"long": {"scale": {"heads": "double"}}}, "deploy.long.scale.heads: 'double' is not allowed (one of ['scale', 'keep'])"),
    ({"long": {"seqlen": 8}}, "deploy.long.seqlen: unknown profile setting; allowed:"),
    ({"9x": {}}, "deploy.9x: '9x' is not allowed (a profile name: a letter, then letters, digits, _ or -)"),
    ({"long": {"image_size": 64}}, "deploy.long.image_size: [64, 64] is not allowed (task 'mqar' takes tokens; give seq_len)"),
    ([1], "deploy: [1] is not allowed (a mapping)"),
])
def test_a_bad_profile_is_one_line_naming_file_key_and_value(deploy, line):
    with pytest.raises(SpaceError) as e:
        _space(deploy)
    assert str(e.value).startswith(f"s.yaml: {line}") and "\n" not in str(e.value)


# ------------------------------------------------------------------------------ profile models
def test_profile_model_equals_a_hand_built_model_of_the_same_size():
    arch = _arch(32, ("softmax", {"heads": 2}), ("gqa", {"heads": 4, "kv_heads": 1}), ("moh", {}),
                 ("local", {"heads": 2, "window": 5}), ("hyena", {"filter_dim": 8}))
    profile = Profile("long", seq_len=128, scale=Scale(dim=4, depth=2))
    # by hand: width x4, every block twice in place, every head count x4 (MoH's defaults 4/1/2 too)
    hand = _arch(128, *[b for b in (("softmax", {"heads": 8}), ("gqa", {"heads": 16, "kv_heads": 4}),
                                    ("moh", {"heads": 16, "shared": 4, "topk": 8}),
                                    ("local", {"heads": 8, "window": 5}), ("hyena", {"filter_dim": 8}))
                        for _ in range(2)])
    assert scale_arch(arch, profile) == hand
    io_long = TaskIO("tokens", 32, seq_len=128, vocab_size=32, causal=True, per_token=True)
    torch.manual_seed(0)
    got = profile_model(arch, IO, profile)
    want = build_model(hand, io_long)
    assert {k: v.shape for k, v in got.state_dict().items()} == {k: v.shape for k, v in want.state_dict().items()}
    assert count_params(got) == count_params(want) > 16 * count_params(build_model(arch, IO))


def test_heads_keep_widens_heads_and_scale_one_is_the_arch_itself():
    arch = _arch(32, ("softmax", {"heads": 2}), ("diff", {"heads": 2, "noise_heads": 1}))
    kept = scale_arch(arch, Profile("p", scale=Scale(dim=2, heads="keep")))
    assert [b.mixer.params for b in kept.stages[0].blocks] == [b.mixer.params for b in arch.stages[0].blocks]
    assert kept.stages[0].dim == 64
    assert scale_arch(arch, Profile("p", seq_len=4096)) is arch


def test_profile_costs_are_those_of_the_hand_built_model():
    arch = _arch(16, ("softmax", {"heads": 2}), ("linear", {"heads": 2}))
    profile = Profile("long", seq_len=64, dtype="bfloat16", scale=Scale(dim=2))
    io_long = profile.task_io(IO)
    hand = build_model(_arch(32, ("softmax", {"heads": 4}), ("linear", {"heads": 4})), io_long)
    got = measure_profile(arch, IO, ProfileRequest(profile, ("flops", "state_mb", "latency_ms")), FAST)
    assert got["params@long"] == count_params(hand)
    assert got["flops@long"] == flops_per_sample(hand, io_long)
    # softmax: K and V of 64 tokens x 32 channels; linear: per head (4 of width 8) an 8 x 8 state and
    # an 8-vector normaliser; 2 bytes a value in bfloat16
    assert got["state_mb@long"] == (2 * 64 * 32 + 4 * (8 * 8 + 8)) * 2 / 2**20
    assert got["latency_ms@long"] > 0 and "latency_spread@long" in got and "latency_ms" not in got


def test_each_timed_profile_metric_keeps_its_medians_95_percent_interval():
    arch = _arch(16, ("softmax", {"heads": 2}))
    got = measure_profile(arch, IO, ProfileRequest(Profile("long", seq_len=32), ("latency_ms", "decode_ms")), FAST)
    for timed in ("latency", "decode"):
        low, mid, high = (got[f"{timed}_{k}@long"] for k in ("ci_low", "ms", "ci_high"))
        assert 0 < low <= mid <= high, timed
        assert got[f"{timed}_ci@long"] == pytest.approx((high - low) / (2 * mid))


def _flops_at(arch, n):
    request = ProfileRequest(Profile("p", seq_len=n, scale=Scale(dim=2)), ("flops",))
    return measure_profile(arch, IO, request, FAST)["flops@p"]


def _quadratic_fit(points):
    """Exact (c0, c1, c2) of c0 + c1 n + c2 n^2 through three (n, f) points (Cramer's rule)."""
    (a, fa), (b, fb), (c, fc) = [(Fraction(n), Fraction(f)) for n, f in points]
    det = (b - a) * (c - a) * (c - b)
    c2 = ((fc - fa) * (b - a) - (fb - fa) * (c - a)) / det
    c1 = (fb - fa) / (b - a) - c2 * (a + b)
    return fa - c1 * a - c2 * a * a, c1, c2


@pytest.mark.parametrize("mixer,params,quadratic", [
    ("softmax", {"heads": 2}, True), ("gqa", {"heads": 4, "kv_heads": 1}, True),
    ("linear", {"heads": 2}, False), ("local", {"heads": 2, "window": 5}, False),
])
def test_flops_at_a_long_profile_grow_as_the_family_should(mixer, params, quadratic):
    """Exact counts at lengths 64..512 on the x2 profile: attention's cost is a quadratic in
    the length whose n^2 term is its score and value matmuls, 2 (D_qk + D_v) per pair over all
    heads = 4 x width (is_causal pays for all pairs, evaluators.flops); linear and sliding-window
    attention are linear in the length (no n^2 term at all)."""
    arch = _arch(32, (mixer, params))
    f = {n: _flops_at(arch, n) for n in (64, 128, 256, 512)}
    c0, c1, c2 = _quadratic_fit([(n, f[n]) for n in (64, 128, 256)])
    assert c0 + c1 * 512 + c2 * 512**2 == f[512]  # a polynomial of degree <= 2, exactly
    assert c2 == (4 * 64 if quadratic else 0)


def test_hyena_flops_grow_as_n_log_n():
    arch = _arch(32, ("hyena", {"filter_dim": 8}))
    f64, f512 = _flops_at(arch, 64), _flops_at(arch, 512)
    # linear parts x8; the FFTs (of the 2n-padded sequence) x8 x log2(1024) / log2(128)
    assert 8 < f512 / f64 <= 8 * 10 / 7


def _best_ms(arch, n, calls=5):
    model = profile_model(arch, IO, Profile("p", seq_len=n, scale=Scale(dim=2))).eval()
    x = torch.randint(0, 32, (1, n))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            model(x)
            times = []
            for _ in range(calls):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return min(times) * 1e3


def test_latency_at_a_long_profile_grows_quadratically_only_for_softmax():
    """Measured, loosely (a shared 2-core CPU; the best of 5 calls): from 2048 to 8192 tokens (x4)
    at width 64, softmax attention's time grows by more than 8x (quadratic: 16x) and by clearly
    more than linear and sliding-window attention's, which stay under 12x. Their ideal is 4x, but
    on this machine their working set leaves the caches in this range (measured 4.8x to 8.4x for
    linear attention), so the exact statement is the FLOP test above; this one checks that the
    clock agrees in direction."""
    growth = {}
    for mixer, params in (("softmax", {"heads": 2}), ("linear", {"heads": 2}), ("local", {"heads": 2, "window": 5})):
        arch = _arch(32, (mixer, params), ffn=FFNSpec("none"))
        growth[mixer] = _best_ms(arch, 8192) / _best_ms(arch, 2048)
    efficient = max(growth["linear"], growth["local"])
    assert growth["softmax"] > 8 and efficient < 12 and growth["softmax"] > 1.3 * efficient, growth


# ------------------------------------------------------------------------------ metric@profile
def test_profile_metrics_resolve_only_for_costs_and_known_profiles():
    assert split_metric("latency_ms@long") == ("latency_ms", "long") and split_metric("params") == ("params", "")
    assert metric_name("flops", "long") == "flops@long" and metric_name("flops", "") == "flops"
    m = resolve_metric("latency_ms@long", ["long"])
    assert (m.name, m.direction, m.at) == ("latency_ms@long", "minimize", "init")  # random weights: before training
    assert resolve_metric("latency_ms", ["long"]).at == "trained"  # unsuffixed: as before
    assert DIRECTIONS["peak_mem_mb@long"] == "minimize"
    with pytest.raises(UnknownName, match=r"unknown profile 'short'; known: long"):
        resolve_metric("latency_ms@short", ["long"])
    with pytest.raises(UnknownName, match=r"unknown metric 'accuracy@long'; known: params@long"):
        resolve_metric("accuracy@long", ["long"])
    with pytest.raises(KeyError):
        DIRECTIONS["accuracy@long"]
    names = filter_metrics(["long"])
    assert {"latency_ms@long", "flops@long", "params@long", "peak_mem_mb@long"} <= set(names)
    assert "decode_ms@long" not in names and "flops" in names


def test_a_space_file_naming_an_unknown_profile_is_one_line(tmp_path):
    from nas.engine.config import load_space_checked

    text = TINY_SPACE % {"steps": 2}
    path = tmp_path / "s.yaml"
    path.write_text(text.replace("latency_ms: minimize", "latency_ms@long: minimize"))
    with pytest.raises(UserError) as e:
        load_space_checked(str(path))
    assert str(e.value) == f"{path}: objectives.latency_ms@long: unknown profile 'long'; known: none"


def test_settings_request_each_named_profile_once():
    space = _space({"long": {"seq_len": 64}, "wide": {"scale": {"dim": 2}}, "unused": {}},
                   objectives={"accuracy": "maximize", "latency_ms@long": "minimize"},
                   constraints={"flops@wide": {"max": 1e9}, "params@long": {"max": 1e9}})
    settings = EvalSettings.from_space(space)
    assert [(r.profile.name, r.metrics) for r in settings.profiles] == [("long", ("latency_ms", "params")),
                                                                        ("wide", ("flops",))]
    assert profile_requests(["latency_ms", "flops"], space.profiles) == ()
    implicit = task_profile(space.io, settings.latency)
    assert (implicit.name, implicit.seq_len, implicit.scale) == ("", 16, Scale())


def test_evaluate_measures_profiles_and_a_filter_on_one_stops_before_training():
    space = _space({"long": {"seq_len": 64, "scale": {"dim": "2x"}}},
                   objectives={"accuracy": "maximize", "latency_ms@long": "minimize"},
                   latency={"repeats": 3, "warmup": 1, "max_seconds": 0.2})
    arch = _arch(16, ("softmax", {"heads": 2}))
    metrics = evaluate(arch, EvalSettings.from_space(space))
    assert metrics["latency_ms@long"] > 0 and metrics["params@long"] > metrics["params"] > 0
    assert "accuracy" in metrics and "accuracy@long" not in metrics

    space.raw["ladder"] = [{"rung": "filter", "max": {"params@long": 1000}}]
    steps = []
    with pytest.raises(LadderPruned, match=r"params@long [0-9.e+]+ > max 1000"):
        evaluate(arch, EvalSettings.from_space(space), on_step=lambda s, loss: steps.append(s))
    assert steps == []  # never trained


def test_a_profile_the_model_cannot_be_built_at_fails_the_trial_naming_it():
    arch = ArchSpec(StemSpec("patch1d", 16), (StageSpec(16, (BlockSpec(MixerSpec("softmax", {"heads": 2})),)),))
    io = TaskIO("signal", 4, seq_len=64)
    with pytest.raises(TrialFailure, match="profile tiny"):
        measure_profile(arch, io, ProfileRequest(Profile("tiny", seq_len=8), ("latency_ms",)), FAST)


# ------------------------------------------------------------------------------ placement
def test_a_cuda_profile_is_refused_on_a_machine_without_cuda(tmp_path, monkeypatch, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is there: the profile is allowed")
    from nas.cli import main

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "s.yaml"
    path.write_text(TINY_SPACE % {"steps": 2} + "deploy:\n  gpu: {seq_len: 64, device: 'cuda:1'}\n")
    with pytest.raises(SystemExit) as e:
        main(["search", "--space", str(path), "--study", "x", "--trials", "1"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert e.value.code == 2 and err == [f"error: {path}: deploy.gpu.device: 'cuda:1' is not allowed here "
                                         "(no CUDA device is available on this machine)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]  # nothing written


def test_ray_asks_a_gpu_for_a_cuda_profile_and_none_for_a_cpu_one():
    space = _space({"gpu": {"device": "cuda"}, "cpu": {"seq_len": 32}})
    assert measure_options(space.profiles["gpu"]) == GPU_TASK == {"num_gpus": 1, "num_cpus": 0}
    assert measure_options(space.profiles["cpu"]) is None
    with pytest.raises(UserError, match=r"^s.yaml: deploy.gpu.device: 'cuda' is not allowed here \(the Ray "
                                        r"cluster has no GPU"):
        check_cluster(space, {"CPU": 2.0})
    check_cluster(space, {"CPU": 2.0, "GPU": 1.0})
    check_cluster(_space({"cpu": {}}), {"CPU": 2.0})
    assert local_gpus(space, 0) is None and local_gpus(space, 2) == 2 and local_gpus(_space({"cpu": {}}), 0) == 0


def test_ray_profile_runner_sends_cuda_profiles_to_a_gpu_task_and_measures_cpu_ones_here():
    space = _space({"gpu": {"device": "cuda:1", "seq_len": 32}, "cpu": {"seq_len": 32}},
                   objectives={"accuracy": "maximize", "flops@gpu": "minimize", "flops@cpu": "minimize"})
    settings = EvalSettings.from_space(space)
    sent = []

    def submit(options, fn, *args):
        sent.append((options, args[2].profile.name))
        return {"flops@gpu": 1.0}

    lock = DeviceLock("cpu", mode="none")
    run = profile_runner(settings, lock, submit=submit)
    arch = _arch(16, ("softmax", {"heads": 2}))
    got = [run(arch, space.io, r) for r in settings.profiles]
    assert sent == [({"num_gpus": 1, "num_cpus": 0}, "gpu")]
    assert got[0] == {"flops@gpu": 1.0} and got[1]["flops@cpu"] == flops_per_sample(
        build_model(arch, space.profiles["cpu"].task_io(space.io)), space.profiles["cpu"].task_io(space.io))
