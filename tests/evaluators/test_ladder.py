"""The proxy ladder: filter, zero-cost and early training rungs with ASHA-style promotion."""

import pytest

import nas
from evaluators.ladder import parse_ladder, promote
from tests.cli_helpers import invoke, write_space

pytestmark = pytest.mark.slow


def test_promote_rule():
    assert promote(0.1, [0.9, 0.8], keep=0.5, min_trials=4)  # too few scores yet: go on
    hist = [0.9, 0.8, 0.7, 0.6]
    assert promote(0.85, hist, keep=0.5, min_trials=4)  # 2nd of 5, top floor(2.5) = 2
    assert not promote(0.75, hist, keep=0.5, min_trials=4)  # 3rd of 5
    assert promote(0.95, hist, keep=0.2, min_trials=4)
    assert not promote(float("nan"), [], keep=1.0, min_trials=1)


@pytest.mark.parametrize("raw,fragment", [
    ([{"rung": "magic"}], "ladder[0].rung"),
    ([{"rung": "train", "steps": 100}], "ladder[0].steps"),
    ([{"rung": "train", "steps": 5}, {"rung": "train", "steps": 3}], "ladder[1].steps"),
    ([{"rung": "zero_cost", "metric": "vibes"}], "ladder[0].metric"),
    ([{"rung": "filter", "max": {"accuracy": 1}}], "ladder[0].max.accuracy"),
    ([{"rung": "filter"}], "needs max or min"),
    ([{"rung": "train", "steps": 5, "keep": 2}], "ladder[0].keep"),
    ([{"rung": "predict", "max": {"latency_ms": -1}}], "ladder[0].max.latency_ms: -1.0 is not allowed"),
    ([{"rung": "predict", "max": {"latency_ms": 0}}], "a bound at or below 0 prunes every candidate"),
])
def test_parse_errors(raw, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        parse_ladder(raw, train_steps=10, zero_cost_names=("snip",), filter_metrics=("params", "flops"))


LADDER_SPACE = """
task: {name: mqar, params: {vocab_size: 32, seq_len: 16, num_kv_pairs: 2, n_train: 128, n_test: 32}}
objectives: {accuracy: maximize, latency_ms: minimize}
train: {steps: 8, batch_size: 16, lr: 0.01}
latency: {repeats: 3, max_seconds: 0.1}
ladder:
  - {rung: filter, max: {params: 30000}}
  - {rung: zero_cost, metric: snip, keep: 0.5, min_trials: 2}
  - {rung: train, steps: 4, keep: 0.5, min_trials: 2}
arch:
  stages:
    - depth: [1, 2]
      dim: [16, 32, 64]
      mixer: {per_layer: true, choices: {softmax: {heads: [1, 2]}, hyena: {filter_dim: [8]}}}
"""


def test_ladder_search_records_rungs(tmp_path):
    space = write_space(tmp_path, text=LADDER_SPACE)
    url = f"sqlite:///{tmp_path}/l.db"
    r = invoke("search", "--space", space, "--study", "l", "--storage", url, "--trials", 14, "--sampler", "random",
               cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    df = nas.load_trials(url, "l")
    pruned = df[df.state == "PRUNED"]
    done = df[(df.state == "COMPLETE") & df.reused_from.isna()]
    assert len(pruned) >= 1 and len(done) >= 1
    # the filter rung stops exactly the candidates over the bound
    from evaluators import load_space
    from search_spaces import ArchSpec, build_model

    io = load_space(str(space)).io
    for _, row in df[df.arch_json.notna()].iterrows():
        n = sum(p.numel() for p in build_model(ArchSpec.from_json(row.arch_json), io).parameters())
        assert (row.ladder_stopped == "filter") == (n > 30000), (row.number, n, row.ladder_stopped)
    assert (df.ladder_stopped == "filter").any()
    assert set(pruned.ladder_stopped) <= {"filter", "zero_cost:snip", "train@4"}
    for _, row in pruned.iterrows():
        assert row.error.startswith(f"stopped at rung {row.ladder_stopped}")
    for _, row in done.iterrows():
        assert row.ladder_passed == ["filter", "zero_cost:snip", "train@4", "train"]
        assert set(row.ladder_values) == {"zero_cost:snip", "train@4"}
