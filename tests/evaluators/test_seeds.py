"""train.seeds: a trial's quality metrics over several proxy runs (mean, sample std, count), each
run the same as a single-seed run of its seed computed on its own; costs timed once, with the
median's 95% interval."""

import statistics

import pytest
import torch

from evaluators.evaluation import EvalSettings, evaluate
from evaluators.latency import LatencyConfig
from evaluators.metrics import METRIC_REGISTRY, register_metric
from evaluators.seeds import seed_for, summarize
from evaluators.tasks import make_task
from evaluators.train import ProxyTraining, TrainConfig, evaluate_accuracy, train_proxy
from search_spaces import ArchSpec, BlockSpec, FFNSpec, MixerSpec, StageSpec, StemSpec, build_model
from search_spaces.schema import SettingError

TASK = ("mqar", dict(vocab_size=32, seq_len=16, num_kv_pairs=2, n_train=64, n_test=32))
ARCH = ArchSpec(StemSpec("embed"), (StageSpec(16, (BlockSpec(MixerSpec("softmax", {"heads": 2}), FFNSpec("mlp", 2)),)),),
                causal=True)
LATENCY = LatencyConfig(warmup=1, repeats=3, max_seconds=0.1, min_sample_ms=0.0)
QUALITY = ("accuracy", "final_loss", "train_loss_sum")


def _settings(seeds: int, seed: int = 0, **kw) -> EvalSettings:
    return EvalSettings(task=TASK[0], task_params=TASK[1], train=TrainConfig(steps=4, batch_size=8, seeds=seeds),
                        latency=LATENCY, seed=seed, **kw)


def _alone(seed: int, task_seed: int):
    """One proxy run with ``seed``, computed here: init and batches from ``seed``, the search's data."""
    task = make_task(*TASK, seed=task_seed)
    torch.manual_seed(seed)
    model = build_model(ARCH, task.io)
    return train_proxy(model, task, TrainConfig(steps=4, batch_size=8), seed=seed)


@pytest.mark.parametrize("seed", [0, 7])
def test_seeds_store_the_mean_std_and_count_of_runs_computed_alone(seed):
    m = evaluate(ARCH, _settings(2, seed))
    runs = [_alone(seed, seed), _alone(seed + 1000, seed)]
    for name, values in (("accuracy", [r.accuracy for r in runs]), ("final_loss", [r.final_loss for r in runs]),
                         ("train_loss_sum", [r.loss_sum for r in runs])):
        assert m[name] == pytest.approx(statistics.mean(values), rel=1e-12), name
        assert m[f"{name}_std"] == pytest.approx(statistics.stdev(values), rel=1e-9, abs=1e-15), name
        assert m[f"{name}_n"] == 2
    assert m["train_loss_sum_std"] > 0  # two independent runs, not one counted twice
    assert "train_seconds_std" not in m and m["train_seconds"] > 0  # the runs' total
    for cost in ("params", "flops", "latency_ms", "peak_mem_mb"):  # measured once, no spread over seeds
        assert cost in m and f"{cost}_std" not in m and f"{cost}_n" not in m


def test_one_seed_stores_the_single_run_as_before():
    m = evaluate(ARCH, _settings(1))
    alone = _alone(0, 0)
    assert (m["accuracy"], m["final_loss"], m["train_loss_sum"]) == (alone.accuracy, alone.final_loss, alone.loss_sum)
    assert not [k for k in m if k.endswith(("_std", "_n"))]
    assert set(m) == {"params", "flops", "state_mb", "accuracy", "final_loss", "train_loss_sum", "train_seconds",
                      "peak_mem_mb", "latency_ms", "latency_mad_ms", "latency_spread", "latency_ci", "latency_ci_low",
                      "latency_ci_high", "latency_runs", "latency_calls_per_sample", "latency_rounds",
                      "latency_converged", "eval_seconds"}


def test_latency_keeps_the_interval_of_its_median():
    m = evaluate(ARCH, _settings(1, decode=True))
    for prefix in ("latency", "decode"):
        low, mid, high = m[f"{prefix}_ci_low"], m[f"{prefix}_ms"], m[f"{prefix}_ci_high"]
        assert 0 < low <= mid <= high
        assert m[f"{prefix}_ci"] == pytest.approx((high - low) / (2 * mid))  # the relative half-width, as before


def test_trained_user_metrics_are_averaged_over_seeds_init_ones_are_not():
    seen = []

    def trained(model, task, settings):
        seen.append(settings.seed)
        with torch.no_grad():
            return float(sum(p.abs().sum() for p in model.parameters()))

    register_metric("tseeds_norm", "minimize", trained)
    register_metric("tseeds_init", "minimize", lambda model, task, settings: 1.0, at="init")
    try:
        m = evaluate(ARCH, _settings(3, seed=2, metrics=("tseeds_norm", "tseeds_init")))
    finally:
        METRIC_REGISTRY.unregister("tseeds_norm")
        METRIC_REGISTRY.unregister("tseeds_init")
    assert seen == [2, 1002, 2002]  # each run's metric under its own seed
    assert m["tseeds_norm_n"] == 3 and m["tseeds_norm_std"] > 0
    assert m["tseeds_init"] == 1.0 and "tseeds_init_n" not in m


def test_train_rungs_rank_the_first_run():
    """The ladder's train rung ranks the first run's partial training; the other runs are full."""
    from evaluators.ladder import parse_ladder

    ladder = parse_ladder([{"rung": "train", "steps": 2, "keep": 0.5}], train_steps=4, zero_cost_names=(),
                          filter_metrics=(), profiles={}, constraints={})
    m = evaluate(ARCH, _settings(2, ladder=ladder))
    task, cfg = make_task(*TASK), TrainConfig(steps=4, batch_size=8)
    torch.manual_seed(0)
    model = build_model(ARCH, task.io)
    with ProxyTraining(model, task, cfg, seed=0) as run:
        run.train_to(2)
        first_at_2 = evaluate_accuracy(model, task, cfg.eval_samples)
    assert m["ladder_values"] == {"train@2": first_at_2} and m["ladder_passed"] == ["train@2", "train"]
    assert m["accuracy_n"] == 2 and "ladder_values_n" not in m


def test_summarize_and_seed_numbers():
    assert [seed_for(5, j) for j in range(3)] == [5, 1005, 2005]
    assert summarize([{"a": 1.0, "train_seconds": 2.0}]) == {"a": 1.0, "train_seconds": 2.0}
    two = summarize([{"a": 1.0, "train_seconds": 2.0}, {"a": 3.0, "train_seconds": 1.0}])
    assert two == {"a": 2.0, "a_std": pytest.approx(2 ** 0.5), "a_n": 2, "train_seconds": 3.0}
    assert list(two) == ["a", "a_std", "a_n", "train_seconds"]


def test_seeds_setting_is_checked():
    assert TrainConfig.from_dict({}).seeds == 1 and TrainConfig.from_dict({"seeds": 3}).seeds == 3
    with pytest.raises(SettingError, match=r"train\.seeds: 0 is not allowed \(an int >= 1\)"):
        TrainConfig.from_dict({"seeds": 0})
