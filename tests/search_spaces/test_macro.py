"""Macro layout: width vs depth at a fixed head budget, structured hybrid patterns, stages."""

import optuna
import pytest

from evaluators import load_space
from search_spaces import build_model, sample
from search_spaces.sampling import layer_groups
from tests.cli_helpers import load_space_text

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _samples(space, n=60, seed=0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        t = study.ask()
        out.append((sample(space, t), dict(t.params)))
        study.tell(t, 0.0)
    return out


def test_head_budget_trades_depth_for_heads():
    space = load_space_text("""
        task: {name: mqar, params: {vocab_size: 32, seq_len: 16, num_kv_pairs: 2}}
        arch:
          stages:
            - head_budget: 8
              depth: [1, 2, 4, 8]
              dim: 32
              mixer: {choices: {softmax: {}, gqa: {kv_heads: [1]}}}
    """)
    depths = set()
    for arch, _ in _samples(space):
        blocks = arch.stages[0].blocks
        depths.add(len(blocks))
        for b in blocks:
            heads = b.mixer.params.get("heads", 4)  # 4 is the registry default (stripped when equal)
            assert heads * len(blocks) == 8, arch.summary()
    assert depths == {1, 2, 4, 8}


def test_head_budget_validation():
    from search_spaces import SpaceError

    with pytest.raises(SpaceError, match=r"arch.stages\[0\].depth: 3 does not divide head_budget 8"):
        load_space_text("""
            task: {name: mqar, params: {vocab_size: 32, seq_len: 16, num_kv_pairs: 2}}
            arch: {stages: [{head_budget: 8, depth: [1, 3], dim: 32, mixer: {choices: {softmax: {}}}}]}
        """)
    with pytest.raises(SpaceError, match=r"with 8 heads per layer \(depth 1\)"):
        load_space_text("""
            task: {name: mqar, params: {vocab_size: 32, seq_len: 16, num_kv_pairs: 2}}
            arch: {stages: [{head_budget: 8, depth: [1, 2], dim: 12, mixer: {choices: {softmax: {}}}}]}
        """)


@pytest.mark.parametrize("pattern,depth,kw,expected", [
    ("a_then_b", 4, {"split": 0.5}, "aabb"),
    ("a_then_b", 4, {"split": 0.25}, "abbb"),
    ("a_then_b", 3, {"split": 0.9}, "aab"),  # both groups kept when the stage has room
    ("a_then_b", 1, {"split": 0.5}, "b"),
    ("interleave", 6, {"every": 3}, "aabaab"),
    ("stripe", 5, {}, "ababa"),
])
def test_layer_groups(pattern, depth, kw, expected):
    assert "".join(layer_groups(pattern, depth, **kw)) == expected


def test_patterns_sample_structured_hybrids():
    space = load_space_text("""
        task: {name: mnist1d, params: {num_samples: 100}}
        arch:
          stem: {patch: 4}
          stages:
            - depth: [2, 4]
              dim: 32
              mixer:
                pattern: [a_then_b, interleave, stripe]
                a: {gfnet: {}, conv: {}}
                b: {softmax: {heads: [2, 4]}}
                split: [0.5]
                every: [2]
    """)
    seen = set()
    for arch, params in _samples(space, 80):
        types = [b.mixer.type for b in arch.stages[0].blocks]
        groups = "".join("b" if t == "softmax" else "a" for t in types)
        pattern = params["s0.pattern"]
        seen.add(pattern)
        assert groups == "".join(layer_groups(pattern, len(types), 0.5, 2)), (pattern, types)
        # one mixer config per group within the stage
        assert len({b.mixer for b in arch.stages[0].blocks if b.mixer.type == "softmax"}) <= 1
        build_model(arch, space.io)
    assert seen == {"a_then_b", "interleave", "stripe"}


def test_hierarchical_image_space():
    space = load_space("vision-hier")
    for arch, _ in _samples(space, 30):
        assert len(arch.stages) >= 2
        assert arch.stages[0].downsample == "none"
        assert all(s.downsample in ("merge", "conv") for s in arch.stages[1:])
        assert arch.stem.type == "patch2d"
        model = build_model(arch, space.io)
        assert sum(p.numel() for p in model.parameters()) > 0


def test_wide_vs_deep_space_keeps_head_budget():
    space = load_space("wide-vs-deep")
    budget = space.stages[0].head_budget
    for arch, _ in _samples(space, 30):
        blocks = arch.stages[0].blocks
        for b in blocks:
            if "heads" in b.mixer.params or b.mixer.type in ("softmax", "gqa"):
                assert b.mixer.params.get("heads", 4) * len(blocks) == budget
