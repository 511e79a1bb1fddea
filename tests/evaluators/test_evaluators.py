import math

import pytest
import torch

from evaluators.cost import count_params, flops_per_sample
from evaluators.errors import NonFiniteLoss, TrialFailure
from evaluators.evaluation import EvalSettings, evaluate
from evaluators.latency import LatencyConfig, measure_latency
from evaluators.tasks import make_task
from evaluators.train import TrainConfig, train_proxy
from search_spaces import ArchSpec, BlockSpec, FFNSpec, MixerSpec, StageSpec, StemSpec, build_model
from search_spaces.schema import SettingError

TASK = ("mqar", dict(vocab_size=32, seq_len=16, num_kv_pairs=2, n_train=256, n_test=64))


def _arch(heads=2, dim=32):
    return ArchSpec(StemSpec("embed"), (StageSpec(dim, (BlockSpec(MixerSpec("softmax", {"heads": heads}), FFNSpec("mlp", 2)),)),),
                    causal=True)


def test_params_and_flops():
    task = make_task(*TASK)
    m = build_model(_arch(), task.io)
    assert count_params(m) == sum(p.numel() for p in m.parameters())
    f1 = flops_per_sample(m, task.io)
    f2 = flops_per_sample(build_model(_arch(dim=64), task.io), task.io)
    # qkv (3 C^2) + proj (C^2) + mlp (4 C^2) + head (C V) per token, 2 FLOPs per MAC, plus attention:
    # Q K^T and P V, 2 N^2 C each over the heads (all N^2 pairs although causal: evaluators.flops)
    N, C, V = 16, 32, 32
    linear = 2 * N * (3 * C * C + C * C + 2 * (C * 2 * C) + C * V)
    assert f1 == linear + 2 * 2 * N * N * C
    assert f2 > 2.5 * f1


def test_train_proxy_learns_and_is_seeded():
    task = make_task(*TASK)
    cfg = TrainConfig(steps=30, batch_size=16, lr=0.01)
    torch.manual_seed(0)
    r1 = train_proxy(build_model(_arch(), task.io), task, cfg, seed=0)
    torch.manual_seed(0)
    r2 = train_proxy(build_model(_arch(), task.io), task, cfg, seed=0)
    assert r1.accuracy == r2.accuracy and r1.loss_sum == r2.loss_sum
    assert 0.0 <= r1.accuracy <= 1.0 and r1.steps == 30
    assert r1.final_loss < math.log(32)  # learned something beyond uniform guessing


def test_evaluate_split_loss_is_cross_entropy_over_targets_only():
    from evaluators.tasks.base import IGNORE_INDEX
    from evaluators.train import evaluate_split

    task = make_task(*TASK)
    torch.manual_seed(0)
    m = build_model(_arch(), task.io).eval()
    acc, loss = evaluate_split(m, task, batch_size=7)  # batches that do not divide the split
    x, y = task.split("test")
    with torch.no_grad():
        logits = m(x)
    mask = y != IGNORE_INDEX
    expect = torch.nn.functional.cross_entropy(logits[mask], y[mask])
    assert loss == pytest.approx(float(expect), rel=1e-5)
    assert acc == pytest.approx(float((logits.argmax(-1)[mask] == y[mask]).float().mean()))


def test_lr_schedule_decays_to_the_configured_fraction():
    from evaluators.train import lr_at

    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(99, cfg) == pytest.approx(0.1, abs=1e-3)  # default: cosine to 10%
    flat = TrainConfig(steps=100, lr=1.0, warmup_steps=10, decay_to=1.0)
    assert all(lr_at(s, flat) == pytest.approx(1.0) for s in range(10, 100))
    assert TrainConfig.from_dict({"decay_to": 0.5}).decay_to == 0.5
    with pytest.raises(SettingError, match=r"train.decay_to: 2.0 is not allowed \(a number in \[0, 1\]\)"):
        TrainConfig.from_dict({"decay_to": 2.0})


def test_nan_loss_raises():
    task = make_task(*TASK)
    m = build_model(_arch(), task.io)
    with torch.no_grad():
        m.head.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLoss, match="step 0"):
        train_proxy(m, task, TrainConfig(steps=5), seed=0)
    assert issubclass(NonFiniteLoss, TrialFailure)


def test_latency_fields_and_threads_restored():
    task = make_task(*TASK)
    m = build_model(_arch(), task.io)
    before = torch.get_num_threads()
    r = measure_latency(m, task.io, LatencyConfig(repeats=5, max_seconds=0.5, threads=1))
    assert torch.get_num_threads() == before
    assert r["latency_ms"] > 0 and r["latency_runs"] >= 5
    assert 0 <= r["latency_spread"] and r["latency_mad_ms"] >= 0
    assert isinstance(r["latency_converged"], bool)


def test_latency_is_timed_without_recording_autograd():
    """The timed forward is an inference forward: no autograd graph is built while timing."""
    task = make_task(*TASK)
    m = build_model(_arch(), task.io)
    seen = []
    m.register_forward_hook(lambda mod, args, out: seen.append((torch.is_inference_mode_enabled(), out.grad_fn)))
    measure_latency(m, task.io, LatencyConfig(repeats=3, max_seconds=0.1))
    assert seen and all(inf and fn is None for inf, fn in seen)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()  # restored for the caller


def test_evaluate_returns_every_metric():
    s = EvalSettings(task=TASK[0], task_params=TASK[1], train=TrainConfig(steps=5),
                     latency=LatencyConfig(repeats=3, max_seconds=0.2))
    m = evaluate(_arch(), s)
    for k in ("accuracy", "latency_ms", "latency_spread", "peak_mem_mb", "params", "flops", "train_loss_sum",
              "eval_seconds"):
        assert k in m, k


def test_timed_samples_batch_calls_to_the_minimum_sample_time():
    from evaluators.latency import timed_rounds

    calls = []

    def once(k):  # a call that costs exactly 0.5 ms
        calls.append(k)
        return 0.5 * k

    r = timed_rounds(lambda k: [once(k)], LatencyConfig(repeats=5, min_sample_ms=2.0)).summary()
    assert r["latency_calls_per_sample"] == 4 and calls == [1] + [4] * 5  # one probe, then 5 samples of 4
    assert r["latency_ms"] == pytest.approx(0.5) and r["latency_converged"] and r["latency_runs"] == 5
    calls.clear()
    r = timed_rounds(lambda k: [once(k)], LatencyConfig(repeats=3, min_sample_ms=0.0)).summary()
    assert r["latency_calls_per_sample"] == 1 and calls == [1, 1, 1, 1]


def test_one_timer_loop_warms_up_then_times_on_the_injected_clock():
    """time_calls (whole models, decode steps and parts in place): cfg.warmup untimed runs, then
    ready(), then the samples, all on the injected clock (a forward that costs exactly 0.5 ms of
    it); a single call is read by the clock only before and after its k runs."""
    from evaluators.latency import WallClock, time_calls

    now, log, reads = [0.0], [], [0]

    def clock():
        reads[0] += 1
        return now[0]

    def forward():
        log.append("call")
        now[0] += 0.5e-3

    cfg = LatencyConfig(warmup=2, repeats=5, min_sample_ms=2.0)
    r = time_calls([forward], cfg, WallClock(clock), ready=lambda: log.append("ready")).summary()
    assert r["latency_ms"] == pytest.approx(0.5) and r["latency_spread"] == 0 and r["latency_calls_per_sample"] == 4
    assert log == ["call"] * 2 + ["ready"] + ["call"] * (1 + 5 * 4)  # warm-up, ready, the probe, 5 samples of 4
    assert reads[0] == 1 + 2 * 6  # the loop's start (converged: no time check); two per sample (probe, 5 samples)


def test_median_ci_covers_the_median_at_the_stated_rate():
    import random

    from evaluators.latency import median_ci

    rng = random.Random(0)
    assert median_ci([3.0, 1.0, 2.0]) == (1.0, 3.0)  # too few samples: the range
    lo, hi = median_ci(list(range(100)))
    assert (lo, hi) == (39, 60)  # ranks 40 and 61 of 100: the textbook 95% interval
    # exponential samples (skewed, true median ln 2): the interval holds it in about 95% of draws
    covered = sum(lo <= math.log(2) <= hi for lo, hi in
                  (median_ci([rng.expovariate(1.0) for _ in range(60)]) for _ in range(2000)))
    assert 0.93 <= covered / 2000 <= 0.99


def test_noisy_timings_stop_once_the_median_is_pinned_down():
    """A spread that never gets under target_spread still stops early when enough samples fix the
    median to target_ci; without that rule the same samples run to max_seconds."""
    import random

    from evaluators.latency import timed_rounds

    def noisy(seed):
        rng = random.Random(seed)
        return lambda k: [k * rng.uniform(1.0, 1.5)]  # MAD / median stays ~0.1

    r = timed_rounds(noisy(0), LatencyConfig(repeats=10, min_sample_ms=0.0, max_seconds=5.0)).summary()
    assert not r["latency_spread"] <= 0.05 and r["latency_converged"]
    assert r["latency_ci"] <= 0.05 and r["latency_runs"] < 1000
    assert 1.2 < r["latency_ms"] < 1.3
    r = timed_rounds(noisy(0), LatencyConfig(repeats=10, min_sample_ms=0.0, max_seconds=0.05, target_ci=0.0)).summary()
    assert not r["latency_converged"] and r["latency_ci"] > 0  # only the time limit ended it


class DriftingMachine:
    """A fake clock whose machine slows down linearly with time (load building up, a CPU heating):
    a call of cost ``c`` ms advances it by ``c * (1 + drift * t)``, t in seconds of this clock."""

    def __init__(self, drift: float):
        self.t, self.drift, self.log = 0.0, drift, []

    def now(self) -> float:
        return self.t

    def call(self, name: str, cost_ms: float):
        def run():
            self.log.append(name)
            self.t += cost_ms * 1e-3 * (1 + self.drift * self.t)
        return run


def test_paired_timing_cancels_drift_in_ratios_where_sequential_timing_does_not():
    """Three candidates costing 1, 1.5 and 3 ms on a machine that gets 2x slower over the run:
    interleaved rounds give the true ratios (to the fastest) within 3% though every median is
    inflated by the drift; timing them one after the other (the timer loop of a search, on the
    same drifting clock) gets the ratios wrong by more than 10%."""
    from evaluators.latency import WallClock, paired_timing, time_calls

    costs = {"a": 1.0, "b": 1.5, "c": 3.0}
    rounds = 40
    machine = DriftingMachine(drift=1 / (rounds * sum(costs.values()) * 1e-3))  # 2x slower by the end
    paired = paired_timing({n: machine.call(n, c) for n, c in costs.items()}, rounds, clock=WallClock(machine.now),
                           rng=0, warmup=0)
    s = paired.summary()
    assert paired.fastest() == "a" and s["a"]["latency_ratio"] == 1.0
    for n in ("b", "c"):
        assert s[n]["latency_ratio"] == pytest.approx(costs[n], rel=0.03)
        lo, hi = s[n]["latency_ratio_ci_low"], s[n]["latency_ratio_ci_high"]
        assert lo <= s[n]["latency_ratio"] <= hi
        assert s[n]["latency_ms"] > 1.2 * costs[n]  # the drift is in every median ...
        lo, hi = s[n]["latency_ci_low"], s[n]["latency_ci_high"]
        assert lo <= s[n]["latency_ms"] <= hi and s[n]["latency_runs"] == rounds
    # ... and one after the other it lands on the later candidates only
    machine = DriftingMachine(drift=machine.drift)
    cfg = LatencyConfig(warmup=0, repeats=rounds, min_sample_ms=0.0, max_seconds=1e-9)  # one round of `rounds` samples
    alone = {n: time_calls([machine.call(n, c)], cfg, WallClock(machine.now)).summary()["latency_ms"]
             for n, c in costs.items()}
    for n in ("b", "c"):
        assert abs(alone[n] / alone["a"] / costs[n] - 1) > 0.10


def test_paired_timing_runs_each_candidate_once_per_round_in_shuffled_orders():
    from evaluators.latency import WallClock, paired_timing

    machine = DriftingMachine(drift=0.0)
    calls = {n: machine.call(n, 1.0) for n in "abcd"}
    paired = paired_timing(calls, 12, clock=WallClock(machine.now), rng=1, warmup=2, min_sample_ms=2.0)
    assert machine.log[:8] == list("abcd") * 2 and machine.log[8:12] == list("abcd")  # warm-up, one probe each
    assert paired.calls_per_sample == dict.fromkeys("abcd", 2) and paired.rounds == 12
    timed = machine.log[12:]
    rounds = [timed[i:i + 8] for i in range(0, len(timed), 8)]  # a sample is 2 calls of one candidate
    assert len(rounds) == 12 and all(sorted(r) == sorted("aabbccdd") for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # the order changes from round to round
    assert paired.summary()["c"]["latency_ms"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="rounds"):
        paired_timing(calls, 0)


def test_settings_validation():
    with pytest.raises(SettingError, match=r"train\.stpes: unknown setting"):
        TrainConfig.from_dict({"stpes": 3})
    with pytest.raises(SettingError, match=r"latency\.repeats: 'ten' is not allowed \(an int >= 1\)"):
        LatencyConfig.from_dict({"repeats": "ten"})
    assert TrainConfig.from_dict({"lr": 1}).lr == 1.0


def test_latency_device_validation():
    task = make_task(*TASK)
    m = build_model(_arch(), task.io)
    with pytest.raises(ValueError, match="latency.device"):
        measure_latency(m, task.io, LatencyConfig(device="tpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            measure_latency(m, task.io, LatencyConfig(device="cuda"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_latency_cuda_events():
    task = make_task(*TASK)
    m = build_model(_arch(), task.io)
    r = measure_latency(m, task.io, LatencyConfig(device="cuda", repeats=10, max_seconds=1.0))
    assert r["latency_ms"] > 0 and r["peak_mem_mb"] >= 0


def test_decode_state():
    from evaluators.cost import decode_state_mb
    from search_spaces import get_mixer

    n, C = 64, 32
    assert get_mixer("softmax")(C, causal=True).decode_state(n) == 2 * n * C  # the KV cache
    assert get_mixer("gqa")(C, causal=True, heads=4, kv_heads=1).decode_state(n) == 2 * n * C // 4
    lin = get_mixer("linear")(C, causal=True, heads=4)
    assert lin.decode_state(16) == lin.decode_state(4096)  # a recurrent state: constant in length
    loc = get_mixer("local")(C, causal=True, window=5, dilation=2)
    assert loc.decode_state(4096) == 2 * 9 * C  # the (dilated) window only
    task = make_task(*TASK)
    m = build_model(_arch(), task.io)
    assert decode_state_mb(m, 16) == 2 * 16 * 32 * 4 / 2**20
    s = EvalSettings(task=TASK[0], task_params=TASK[1], train=TrainConfig(steps=2),
                     latency=LatencyConfig(repeats=3, max_seconds=0.1))
    assert evaluate(_arch(), s)["state_mb"] == decode_state_mb(m, task.io.seq_len)
